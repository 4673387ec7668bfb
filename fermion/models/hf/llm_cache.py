"""The running batch's KV cache: buffers allocated ahead and written in place.

transformers' `DynamicCache` grows by concatenation, so every decode step copies the whole
cache, and so does every change of the batch (padding rows to one length, adding a row, dropping
one). Here each layer's keys and values live in one buffer `[rows, heads, columns, head_dim]`
that grows by doubling (within the engine's cache bound); the batch occupies rows `0..rows-1`
and columns `start..end-1`, rows left-padded, and an attention mask hides the padding, as in
`generate`'s padded batches. A decode step writes one column; a newcomer writes its own row; a
row that leaves gets a row from the end moved into its place (one row's copy); padding no row
needs any more is dropped by moving `start`, without a copy.

Imported by the scheduler once transformers is loaded (it subclasses transformers' cache layer).
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import Cache, DynamicLayer

#: Rows and columns a first buffer has at least; buffers double from there.
_FIRST_ROWS, _FIRST_COLUMNS = 4, 64


class BatchCache:
    """Keys and values of every running sequence, and the mask of the positions that hold real tokens."""

    def __init__(self, torch: Any, layers: int, most_rows: int, most_positions: int) -> None:
        self.torch = torch
        self.most_rows = most_rows
        self.most_positions = most_positions  # rows × columns of the buffers, at most
        self.rows = 0
        self.start = self.end = 0
        self._keys: list[Any] = []  # per layer: [row capacity, heads, column capacity, head_dim]
        self._values: list[Any] = []
        self._mask: Any = None  # [row capacity, column capacity]: 1 where a row holds a real token
        #: What the model reads and writes (its `cache`/`past_key_values` argument).
        self.cache = Cache(layers=[_SlotLayer(self, index) for index in range(layers)])

    @property
    def width(self) -> int:
        return self.end - self.start

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self._keys, *self._values))

    def step_mask(self) -> Any:
        """The attention mask of the next decode step: the batch's columns and the one the step writes."""
        self._room(self.rows, self.width + 1)
        self._mask[: self.rows, self.end] = 1
        return self._mask[: self.rows, self.start : self.end + 1]

    def advance(self) -> None:
        """The decode step wrote its column (call after the forward pass that used `step_mask()`)."""
        self.end += 1

    def add(self, prefill: Any, row: int, length: int) -> None:
        """Append row `row` of a prefill's `DynamicCache` (left-padded; its last `length` positions are the prompt)."""
        keys = [layer.keys for layer in prefill.layers] + [layer.values for layer in prefill.layers]
        if self._mask is None:
            self._allocate(keys)
        self._room(self.rows + 1, max(self.width, length))
        if length > self.width:  # a longer prompt: the batch gains padding on the left
            if self.end < length:
                self._move(self.rows, length, end=length)
            old_start, self.start = self.start, self.end - length
            self._mask[: self.rows, self.start : old_start] = 0
        first = self.end - length
        for mine, theirs in zip(self._buffers(), keys, strict=True):
            mine[self.rows, :, first : self.end] = theirs[row, :, -length:]
        self._mask[self.rows, self.start : first] = 0
        self._mask[self.rows, first : self.end] = 1
        self.rows += 1

    def keep(self, rows: list[int]) -> list[int]:
        """Keep only these rows (ascending), and drop padding no kept row needs; the kept rows' new order.

        Each gap takes a kept row from the end, so a leaving row costs one row's copy (not all rows after it).
        """
        columns, count, kept = slice(self.start, self.end), len(rows), set(rows)
        holes = [i for i in range(count) if i not in kept]
        movers = [i for i in rows if i >= count]
        order = list(range(count))
        for hole, mover in zip(holes, movers, strict=True):
            for buffer in self._buffers():
                buffer[hole, :, columns] = buffer[mover, :, columns]
            self._mask[hole, columns] = self._mask[mover, columns]
            order[hole] = mover
        self.rows = count
        if not count:
            self.start = self.end = 0
            return order
        used = self._mask[:count, columns].any(dim=0).nonzero()
        self.start += int(used[0])
        return order

    def write(self, layer: int, keys: Any, values: Any) -> tuple[Any, Any]:
        """Store a step's new keys and values of one layer at column `end`; the layer's whole batch back."""
        count = keys.shape[2]
        stored_keys, stored_values = self._keys[layer], self._values[layer]
        stored_keys[: self.rows, :, self.end : self.end + count] = keys
        stored_values[: self.rows, :, self.end : self.end + count] = values
        columns = slice(self.start, self.end + count)
        return stored_keys[: self.rows, :, columns], stored_values[: self.rows, :, columns]

    # -- buffers ------------------------------------------------------------------------------------

    def _buffers(self) -> list[Any]:
        return [*self._keys, *self._values]

    def _allocate(self, like: list[Any]) -> None:
        rows, columns = min(self.most_rows, _FIRST_ROWS), _FIRST_COLUMNS
        half = len(like) // 2
        self._keys = [t.new_zeros((rows, t.shape[1], columns, t.shape[3])) for t in like[:half]]
        self._values = [t.new_zeros((rows, t.shape[1], columns, t.shape[3])) for t in like[half:]]
        self._mask = self.torch.zeros((rows, columns), dtype=self.torch.long, device=like[0].device)

    def _room(self, rows: int, width: int) -> None:
        """Make room for `rows` rows and `width` columns from `start` (moving the batch, or into bigger buffers)."""
        have_rows, have_columns = self._mask.shape
        if rows <= have_rows and self.start + width <= have_columns:
            return
        self._move(rows, width, end=self.width)

    def _move(self, rows: int, width: int, end: int) -> None:
        """Copy the batch so that its columns end at column `end`, into buffers with room for `rows` × `width`."""
        have_rows, have_columns = self._mask.shape
        row_capacity = min(self.most_rows, _doubled(rows, have_rows))
        # a third of the columns left free after a move, so moves are rare (amortised O(1) per step)
        column_capacity = _doubled(width + width // 2, have_columns)
        if row_capacity * column_capacity > self.most_positions:  # the engine's cache bound: no more than needed
            column_capacity = max(width, self.most_positions // row_capacity)
            row_capacity = max(rows, min(row_capacity, self.most_positions // column_capacity))
        source, target = slice(self.start, self.end), slice(end - self.width, end)
        if (row_capacity, column_capacity) != (have_rows, have_columns):
            for group in (self._keys, self._values):
                for index, old in enumerate(group):
                    fresh = old.new_zeros((row_capacity, old.shape[1], column_capacity, old.shape[3]))
                    fresh[: self.rows, :, target] = old[: self.rows, :, source]
                    group[index] = fresh
            mask = self._mask.new_zeros((row_capacity, column_capacity))
            mask[: self.rows, target] = self._mask[: self.rows, source]
            self._mask = mask
        elif target != source:  # the same buffers: shift the batch within them
            for buffer in self._buffers():
                buffer[: self.rows, :, target] = buffer[: self.rows, :, source].clone()
            self._mask[: self.rows, target] = self._mask[: self.rows, source].clone()
        self.start, self.end = end - self.width, end


class SoloCache:
    """One sequence at a time with the model's own cache, for models whose cache is not plain (sliding windows, state)."""

    def __init__(self, torch: Any, device: str) -> None:
        self.torch = torch
        self.device = device
        self.cache: Any = None
        self.rows = self.width = 0

    @property
    def bytes(self) -> int:
        layers = getattr(self.cache, "layers", ())
        return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values) if t is not None)

    def step_mask(self) -> Any:
        return self.torch.ones((1, self.width + 1), dtype=self.torch.long, device=self.device)

    def advance(self) -> None:
        self.width += 1

    def add(self, prefill: Any, row: int, length: int) -> None:
        self.cache, self.rows, self.width = prefill, 1, length

    def keep(self, rows: list[int]) -> list[int]:
        if not rows:
            self.cache, self.rows, self.width = None, 0, 0
        return rows


class _SlotLayer(DynamicLayer):
    """One layer of a `BatchCache`, as transformers' attention code sees it."""

    def __init__(self, owner: BatchCache, index: int) -> None:
        super().__init__()
        self.owner = owner
        self.index = index
        self.is_initialized = True

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        return self.owner.write(self.index, key_states, value_states)

    def get_seq_length(self) -> int:
        return self.owner.width


def _doubled(needed: int, have: int) -> int:
    size = max(have, 1)
    while size < needed:
        size *= 2
    return size
