"""The chunked torch selective scan against a float64 sequential reference, plus the dispatcher.

Errors are measured relative to the largest magnitude of the reference tensor, which is what
matters downstream (a tiny entry next to a huge one cannot be resolved in float32 anyway).
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch

from napari_medseg.ops import (
    available_backends,
    selective_scan,
    selective_scan_ref,
    selective_scan_torch,
)

dispatch = importlib.import_module("napari_medseg.ops.selective_scan")

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(
    seed: int,
    bsz: int = 2,
    d: int = 4,
    n: int = 3,
    L: int = 17,
    groups: int | None = None,
    use_D: bool = True,
    use_z: bool = True,
    use_bias: bool = True,
    big: bool = False,
    softplus: bool = False,
) -> dict[str, torch.Tensor | None]:
    """float64 inputs. ``big``: delta * |A| reaches ~100 (delta up to 10, |A| up to 10.5)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def uni(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    if softplus:  # pre-activation; softplus(10) ~ 10
        delta = uni(-1.0, 10.0 if big else 1.0, bsz, d, L)
    else:
        delta = uni(0.0, 10.0 if big else 0.5, bsz, d, L)
    A = -uni(0.5 if big else 0.05, 10.5 if big else 2.0, d, n)
    bc_shape = (bsz, n, L) if groups is None else (bsz, groups, n, L)
    return {
        "u": rnd(bsz, d, L),
        "delta": delta,
        "A": A,
        "B": rnd(*bc_shape),
        "C": rnd(*bc_shape),
        "D": rnd(d) if use_D else None,
        "z": rnd(bsz, d, L) if use_z else None,
        "delta_bias": 0.3 * rnd(d) if use_bias else None,
    }


def run(fn, inputs, dtype, softplus, seed, **kw):
    """Output, last state and the gradients of a random linear functional of both."""
    leaves = {
        k: (None if v is None else v.to(dtype).clone().requires_grad_()) for k, v in inputs.items()
    }
    y, last = fn(*(leaves[k] for k in NAMES), delta_softplus=softplus, return_last_state=True, **kw)
    g = torch.Generator().manual_seed(seed + 1000)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    gl = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.dtype)
    ((y * gy).sum() + (last * gl).sum()).backward()
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return y, last, grads


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.abs().max().item()
    return (got.double() - ref).abs().max().item() / max(scale, 1e-30)


def assert_matches(inputs, softplus, seed, out_tol=1e-4, grad_tol=1e-3, **kw):
    y, last, grads = run(selective_scan_torch, inputs, torch.float32, softplus, seed, **kw)
    ry, rlast, rgrads = run(selective_scan_ref, inputs, torch.float64, softplus, seed)
    assert y.dtype == torch.float32
    for name, t in [("y", y), ("last", last), *grads.items()]:
        assert torch.isfinite(t).all(), f"non-finite {name}"
    assert rel_err(y, ry) < out_tol, f"y: {rel_err(y, ry):.2e}"
    assert rel_err(last, rlast) < out_tol, f"last state: {rel_err(last, rlast):.2e}"
    assert set(grads) == set(rgrads)
    for k in grads:
        assert grads[k].shape == inputs[k].shape
        err = rel_err(grads[k], rgrads[k])
        assert err < grad_tol, f"grad {k}: {err:.2e}"


CASES = [
    # (name, make_inputs kwargs, softplus, chunk_size)
    ("all-options", dict(L=17), True, None),
    ("L=1", dict(bsz=1, d=6, n=5, L=1, groups=3), False, None),
    ("L=2", dict(L=2, use_D=False), True, None),
    ("grouped-odd-L", dict(bsz=2, d=8, n=4, L=33, groups=2), True, 5),
    ("grouped-one-per-channel", dict(bsz=1, d=4, n=2, L=23, groups=4), False, 4),
    ("bare", dict(L=29, use_D=False, use_z=False, use_bias=False), False, None),
    ("chunk=1", dict(L=13, use_z=False), False, 1),
    ("chunk=L", dict(L=13, use_bias=False), True, 13),
    ("long-odd-L", dict(bsz=1, d=3, n=16, L=257), True, None),
    ("big-delta", dict(L=31, big=True), False, None),
    ("big-delta-softplus-grouped", dict(L=40, big=True, groups=2, use_D=False), True, 6),
]


@pytest.mark.parametrize("name,kw,softplus,chunk", CASES, ids=[c[0] for c in CASES])
def test_torch_backend_matches_float64_reference(name, kw, softplus, chunk):
    seed = sum(map(ord, name))
    assert_matches(make_inputs(seed, **kw), softplus, seed, chunk_size=chunk)


def test_huge_decay_stays_finite_and_exact():
    """delta * |A| up to ~1e4: the decay underflows to 0 instead of overflowing to inf."""
    inp = make_inputs(7, L=24, big=True)
    inp["delta"] = inp["delta"] * 100.0
    assert_matches(inp, False, 7, chunk_size=5)


def test_result_does_not_depend_on_chunk_size():
    inp = make_inputs(3, bsz=1, d=3, n=4, L=50)
    base = run(selective_scan_torch, inp, torch.float32, True, 3, chunk_size=1)
    for chunk in (2, 7, 50, None):
        y, last, grads = run(selective_scan_torch, inp, torch.float32, True, 3, chunk_size=chunk)
        assert rel_err(y, base[0].double()) < 1e-5
        assert rel_err(last, base[1].double()) < 1e-5
        for k in grads:
            assert rel_err(grads[k], base[2][k].double()) < 1e-5, k


def test_gradcheck_float64():
    """Finite differences, independent of the reference implementation."""
    inp = make_inputs(11, bsz=1, d=4, n=2, L=7, groups=2)
    leaves = [inp[k].clone().requires_grad_() for k in NAMES]

    def fn(*xs):
        return selective_scan_torch(*xs, delta_softplus=True, return_last_state=True, chunk_size=3)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_compute_in_float32(dtype):
    inp = make_inputs(5, L=19, groups=2)
    # Mixed precision as in AMP: activations in half, A / D / delta_bias parameters in fp32.
    half = {k: (v if k in ("A", "D", "delta_bias") else v.to(dtype)) for k, v in inp.items()}
    y, last, grads = run(selective_scan_torch, half, None, True, 5)
    assert y.dtype == dtype and last.dtype == torch.float32
    for k, g in grads.items():
        assert g.dtype == half[k].dtype, k
        assert torch.isfinite(g.float()).all(), k
    as_fp32 = {k: v.float() for k, v in half.items()}
    y32, last32, _ = run(selective_scan_torch, as_fp32, torch.float32, True, 5)
    torch.testing.assert_close(y, y32.to(dtype))
    torch.testing.assert_close(last, last32)


def test_backward_saves_no_full_state_tensor():
    """Only inputs and O(B*D*L + B*D*N*L/T) tensors are kept for the backward pass."""
    bsz, d, n, L = 1, 32, 16, 256
    inp = make_inputs(2, bsz=bsz, d=d, n=n, L=L)
    leaves = [v.float().requires_grad_() for v in inp.values()]
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = selective_scan_torch(*leaves, delta_softplus=True)
    assert sizes, "custom Function should save its inputs"
    assert max(sizes) <= max(bsz * d * L, bsz * n * L)
    assert sum(sizes) < bsz * d * n * L / 2
    y.sum().backward()


def test_complex_A_is_rejected_with_advice():
    inp = make_inputs(1)
    inp["A"] = inp["A"].to(torch.complex128)
    with pytest.raises(NotImplementedError, match="complex"):
        selective_scan_torch(*(inp[k] for k in NAMES))


def test_bad_shapes_are_explained():
    inp = make_inputs(1)
    inp["B"] = inp["B"][..., :-1]
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_torch(*(inp[k] for k in NAMES))


# ----------------------------------------------------------------------------- dispatcher


def _call(inp, **kw):
    return selective_scan(*(inp[k].float() for k in NAMES), delta_softplus=True, **kw)


def test_available_backends_lists_what_runs_here():
    names = available_backends()
    assert "torch" in names and "reference" in names
    if not torch.cuda.is_available():
        assert "mamba_ssm" not in names


def test_forced_backends_agree():
    inp = make_inputs(4, L=21, groups=2)
    y_auto = _call(inp)
    y_torch = _call(inp, backend="torch")
    y_ref = _call(inp, backend="reference")
    torch.testing.assert_close(y_auto, y_torch)
    torch.testing.assert_close(y_torch, y_ref, rtol=1e-4, atol=1e-4)
    y, last = _call(inp, backend="torch", return_last_state=True)
    assert last.shape == (2, 4, 3)


def test_forcing_unavailable_mamba_raises(monkeypatch):
    monkeypatch.setattr(dispatch, "_load_mamba", lambda: (None, "ImportError: no mamba_ssm"))
    inp = make_inputs(4)
    with pytest.raises(RuntimeError, match="mamba_ssm.*not available.*backend='torch'"):
        _call(inp, backend="mamba_ssm")
    assert "mamba_ssm" not in available_backends()
    # "auto" silently falls back.
    torch.testing.assert_close(_call(inp), _call(inp, backend="torch"))


def test_forcing_mamba_with_cpu_tensors_raises(monkeypatch):
    monkeypatch.setattr(dispatch, "_load_mamba", lambda: (lambda *a: None, ""))
    with pytest.raises(RuntimeError, match="CUDA"):
        _call(make_inputs(4), backend="mamba_ssm")


def test_auto_routes_cuda_tensors_to_mamba(monkeypatch):
    calls = []

    def fake_fn(*args):
        calls.append(args)
        return "mamba-result"

    monkeypatch.setattr(dispatch, "_load_mamba", lambda: (fake_fn, ""))
    inp = make_inputs(4)
    # CPU tensors: auto must not use mamba even though it "imports".
    assert isinstance(_call(inp), torch.Tensor) and not calls
    monkeypatch.setattr(dispatch, "_all_cuda", lambda *t: True)
    assert _call(inp) == "mamba-result"
    assert len(calls) == 1 and calls[0][8] is True  # delta_softplus passed through positionally


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown selective-scan backend"):
        _call(make_inputs(4), backend="cuda")


def test_real_mamba_loader_never_crashes():
    fn, why = dispatch._load_mamba()
    assert (fn is None) == bool(why)


# ----------------------------------------------------------------------------- mamba-ssm path
# A stand-in for mamba-ssm, installed in sys.modules where the real package would be, so that
# the dispatcher's CUDA branch (import, argument order, layouts, result) runs on a CPU. Only the
# device check (`_all_cuda`) is patched; the import goes through the real `_load_mamba`.
MAMBA_MODULE = "mamba_ssm.ops.selective_scan_interface"


@pytest.fixture
def stand_in_mamba(monkeypatch):
    """Records every call; computes with the reference scan (mamba-ssm's semantics)."""
    calls: list[dict] = []

    def selective_scan_fn(
        u,
        delta,
        A,
        B,
        C,
        D=None,
        z=None,
        delta_bias=None,
        delta_softplus=False,
        return_last_state=False,
    ):
        calls.append(dict(zip(NAMES, (u, delta, A, B, C, D, z, delta_bias))))
        calls[-1].update(delta_softplus=delta_softplus, return_last_state=return_last_state)
        return selective_scan_ref(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )

    parts = MAMBA_MODULE.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    sys.modules[MAMBA_MODULE].selective_scan_fn = selective_scan_fn
    sys.modules["mamba_ssm"].ops = sys.modules["mamba_ssm.ops"]
    sys.modules["mamba_ssm.ops"].selective_scan_interface = sys.modules[MAMBA_MODULE]
    dispatch._load_mamba.cache_clear()
    yield calls
    dispatch._load_mamba.cache_clear()  # the next test imports the real (absent) package again


def test_mamba_dispatch_passes_arguments_and_layouts_through(stand_in_mamba, monkeypatch):
    calls = stand_in_mamba
    assert dispatch._load_mamba()[0] is sys.modules[MAMBA_MODULE].selective_scan_fn
    inp = {k: v.float() for k, v in make_inputs(5, d=6, groups=3, L=19).items()}
    # CPU tensors: "auto" keeps to the torch scan even though mamba-ssm imports
    selective_scan(*(inp[k] for k in NAMES), delta_softplus=True)
    assert not calls
    monkeypatch.setattr(dispatch, "_all_cuda", lambda *t: True)  # as if every tensor were CUDA
    for backend in ("auto", "mamba_ssm"):
        y, last = selective_scan(
            *(inp[k] for k in NAMES),
            delta_softplus=True,
            return_last_state=True,
            backend=backend,
        )
        got = calls[-1]
        for k in NAMES:  # the very tensors, in mamba-ssm's positional order and layouts
            assert got[k] is inp[k], k
        assert got["B"].shape == (2, 3, 3, 19) and got["u"].shape == (2, 6, 19)
        assert got["delta_softplus"] is True and got["return_last_state"] is True
        y_ref, last_ref = selective_scan_ref(
            *(inp[k] for k in NAMES), delta_softplus=True, return_last_state=True
        )
        torch.testing.assert_close(y, y_ref)  # its result is what the dispatcher returns
        torch.testing.assert_close(last, last_ref)
    assert len(calls) == 2


def test_mamba_unet_through_the_mamba_dispatch_matches_the_torch_scan(stand_in_mamba, monkeypatch):
    """The model's four-direction scan in mamba-ssm's grouped layout gives the same output."""
    from napari_medseg.models import create_model

    torch.manual_seed(0)
    model = create_model("mamba_unet", in_channels=1, num_classes=2, preset="lite").eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
        monkeypatch.setattr(dispatch, "_all_cuda", lambda *t: True)
        got = model(x)
    assert stand_in_mamba, "the model never reached the mamba-ssm kernel"
    first = stand_in_mamba[0]
    b, kd, L = first["u"].shape
    assert first["B"].shape[:2] == (b, 4) and first["B"].shape[-1] == L  # 4 scan directions
    assert first["A"].shape == (kd, first["B"].shape[2]) and first["delta_softplus"] is True
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_missing_mamba_module_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # `import mamba_ssm` now raises
    dispatch._load_mamba.cache_clear()
    try:
        fn, why = dispatch._load_mamba()
        assert fn is None and "mamba_ssm" in why
        monkeypatch.setattr(dispatch, "_all_cuda", lambda *t: True)
        inp = make_inputs(6)
        torch.testing.assert_close(_call(inp), _call(inp, backend="torch"))  # auto → torch
        with pytest.raises(RuntimeError, match="not available"):
            _call(inp, backend="mamba_ssm")
    finally:
        dispatch._load_mamba.cache_clear()
