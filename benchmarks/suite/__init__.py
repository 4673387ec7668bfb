"""The benchmark suite's machinery: peer environments, server processes, measurement and reports."""
