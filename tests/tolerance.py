"""The tolerance rule of the kernel tests: a fused result may be off the float64 truth by at most
twice what plain PyTorch at the same precision is off, plus a small floor for the dtype."""

import torch

FLOOR = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def assert_close_to_truth(
    fused: torch.Tensor, same_precision: torch.Tensor, truth: torch.Tensor, dtype: torch.dtype, what: str
) -> None:
    fused, same_precision, truth = (t.detach().double().cpu() for t in (fused, same_precision, truth))
    assert fused.shape == truth.shape, f"{what}: shape {tuple(fused.shape)} != {tuple(truth.shape)}"
    finite = torch.isfinite(truth)
    assert torch.equal(torch.isfinite(fused), finite), f"{what}: non-finite entries differ from the truth"
    if not finite.any():
        return
    scale = truth[finite].abs().max().clamp_min(1.0)
    err_fused = (fused - truth)[finite].abs().max()
    err_torch = (same_precision - truth)[finite].abs().max()
    bound = 2 * err_torch + FLOOR[dtype] * scale
    assert err_fused <= bound, (
        f"{what}: max error {err_fused:.3e} exceeds 2 x PyTorch's {err_torch:.3e} + floor "
        f"(bound {bound:.3e}) in {dtype}"
    )
