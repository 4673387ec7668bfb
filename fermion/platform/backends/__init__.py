"""Where replicas run: the interface (`base`), processes on this machine (`local`), a Ray cluster (`ray`, `ray_head`, `ray_config`) and KubeRay manifests (`kuberay`)."""
