import pytest
import torch

from graphattn.utils import lengths_to_ptr, local_positions, ptr_to_batch, ptr_to_lengths, to_flat, to_padded


def ragged(seed: int, B: int = 6, n: int = 7, d: int | None = 3):
    """A padded batch whose lengths include 0 and n, plus the lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, n + 1, (B,), generator=g)
    lengths[0], lengths[1] = 0, n
    shape = (B, n) if d is None else (B, n, d)
    x = torch.randint(1, 100, shape, generator=g)
    return (x if d is None else x.float()), lengths


def ref_ptr(lengths):
    out = [0]
    for L in lengths.tolist():
        out.append(out[-1] + L)
    return torch.tensor(out)


@pytest.mark.parametrize("d", [None, 1, 3])
@pytest.mark.parametrize("seed", range(3))
def test_round_trip_with_lengths(d, seed):
    x, lengths = ragged(seed, d=d)
    x_flat, ptr = to_flat(x, lengths=lengths)
    expected = torch.cat([x[b, :L] for b, L in enumerate(lengths.tolist())])
    assert torch.equal(x_flat, expected)
    assert torch.equal(ptr, ref_ptr(lengths))

    back, mask = to_padded(x_flat, ptr, max_len=x.size(1), fill_value=-1)
    for b, L in enumerate(lengths.tolist()):
        assert torch.equal(back[b, :L], x[b, :L])
        assert bool((back[b, L:] == -1).all())
        assert mask[b].tolist() == [t >= L for t in range(x.size(1))]
    # A suffix key_padding_mask means the same as the lengths.
    assert torch.equal(to_flat(x, key_padding_mask=mask)[0], x_flat)


def test_to_padded_default_length_is_longest():
    x_flat, ptr = torch.arange(5.0).unsqueeze(1), torch.tensor([0, 2, 2, 5])
    out, mask = to_padded(x_flat, ptr)
    assert out.shape == (3, 3, 1)
    assert out.squeeze(-1).tolist() == [[0, 1, 0], [0, 0, 0], [2, 3, 4]]
    assert mask.tolist() == [[False, False, True], [True] * 3, [False] * 3]


@pytest.mark.parametrize("d", [None, 2])
def test_mask_anywhere_keeps_order(d):
    x, _ = ragged(5, d=d)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(x.shape[:2], generator=g) < 0.4
    mask[0] = torch.tensor([True, True, True, False, False, False, False])  # left padding
    mask[1] = True  # empty row
    x_flat, ptr = to_flat(x, key_padding_mask=mask)
    rows = [x[b][~mask[b]] for b in range(x.size(0))]
    assert torch.equal(x_flat, torch.cat(rows))
    assert torch.equal(ptr, ref_ptr(torch.tensor([len(r) for r in rows])))
    back, back_mask = to_padded(x_flat, ptr)
    for b, r in enumerate(rows):
        assert torch.equal(back[b, : len(r)], r)  # real positions now left-aligned
        assert back_mask[b].sum() == back.size(1) - len(r)


def test_no_mask_means_all_real():
    x, _ = ragged(0)
    x_flat, ptr = to_flat(x)
    assert torch.equal(x_flat, x.reshape(-1, x.size(-1)))
    assert ptr.tolist() == [7 * b for b in range(x.size(0) + 1)]


def test_ptr_helpers_against_loops():
    lengths = torch.tensor([3, 0, 2, 4])
    ptr = lengths_to_ptr(lengths)
    assert torch.equal(ptr, ref_ptr(lengths))
    assert torch.equal(ptr_to_lengths(ptr), lengths)
    batch = [b for b, L in enumerate(lengths.tolist()) for _ in range(L)]
    pos = [t for L in lengths.tolist() for t in range(L)]
    assert ptr_to_batch(ptr).tolist() == batch
    assert local_positions(ptr).tolist() == pos
    assert local_positions([0]).numel() == 0


x3 = torch.zeros(2, 4, 3)
ei_ok = torch.tensor([[0], [1]])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: to_flat(torch.zeros(4)), ValueError, "x must be"),
        (lambda: to_flat(x3, torch.zeros(2, 4, dtype=torch.bool), torch.tensor([1, 2])), ValueError, "not both"),
        (lambda: to_flat(x3, key_padding_mask=torch.zeros(2, 4)), TypeError, "key_padding_mask"),
        (lambda: to_flat(x3, key_padding_mask=torch.zeros(2, 3, dtype=torch.bool)), ValueError, "key_padding_mask"),
        (lambda: to_flat(x3, lengths=torch.tensor([1, 5])), ValueError, r"lengths must lie in \[0, n = 4\]"),
        (lambda: to_flat(x3, lengths=torch.tensor([-1, 2])), ValueError, "lengths"),
        (lambda: to_flat(x3, lengths=torch.tensor([1.0, 2.0])), TypeError, "lengths"),
        (lambda: to_flat(x3, lengths=torch.tensor([1, 2, 3])), ValueError, "lengths"),
        (lambda: lengths_to_ptr(torch.tensor([2, -1])), ValueError, "lengths"),
        (lambda: to_padded(torch.zeros(3, 2), torch.tensor([0, 2])), ValueError, r"ptr\[-1\]"),
        (lambda: to_padded(torch.zeros(3, 2), torch.tensor([0, 3])[[1, 0]]), ValueError, "ptr"),
        (lambda: to_padded(torch.zeros(3, 2), torch.tensor([0, 3]), max_len=2), ValueError, "max_len"),
        (lambda: ptr_to_batch(torch.tensor([0.0, 2.0])), TypeError, "ptr"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
