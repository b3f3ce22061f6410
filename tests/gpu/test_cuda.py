"""On a CUDA device (skipped elsewhere; run by benchmarks/gpu/run.sh): bf16 autocast changes the losses
only by rounding, CUDA decodes the CPU's tokens, a compiled step computes the eager step's losses, and
running out of device memory is one line naming the knob."""

from __future__ import annotations

import pytest
import torch
from helpers import micro_config

from blip_core.models.blip.model import BlipCaptioner, BlipPretrain
from blip_core.models.common.generate import GenerationConfig, generate

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _batch(cfg, b: int = 4, device=CUDA):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(8, cfg.text.vocab_size, (b, 12), generator=g)
    ids[:, 0] = cfg.text.cls_token_id
    imgs = torch.randn(b, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return imgs.to(device), ids.to(device), torch.ones_like(ids).to(device), torch.arange(b, device=device)


def _losses(model, batch, *, bf16: bool) -> dict[str, float]:
    torch.manual_seed(0)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = model(*batch)
    return {k: float(v) for k, v in out.items() if k.endswith("_loss")}


def test_bf16_losses_are_finite_and_close_to_fp32_at_step_1():
    torch.manual_seed(0)
    model = BlipPretrain(micro_config()).to(CUDA).train()
    batch = _batch(model.cfg)
    fp32, bf16 = _losses(model, batch, bf16=False), _losses(model, batch, bf16=True)
    assert set(fp32) == set(bf16) == {"itc_loss", "itm_loss", "lm_loss"}
    for k in fp32:
        assert torch.isfinite(torch.tensor(bf16[k])) and bf16[k] == pytest.approx(fp32[k], rel=0.05), (k, fp32, bf16)


def test_greedy_tokens_on_cuda_in_fp32_equal_the_cpu_ones():
    torch.manual_seed(0)
    cpu = BlipCaptioner(micro_config()).eval()
    gpu = BlipCaptioner(micro_config()).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(CUDA)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    torch.backends.cudnn.allow_tf32 = False
    imgs = _batch(cpu.cfg, device="cpu")[0]
    prompt = torch.tensor([cpu.cfg.text.bos_token_id])
    gcfg = GenerationConfig(method="greedy", max_length=12, min_length=3)
    with torch.no_grad():
        a = generate(cpu, cpu.image_embeds(imgs), prompt, gcfg)
        b = generate(gpu, gpu.image_embeds(imgs.to(CUDA)), prompt.to(CUDA), gcfg)
    assert a.tolist() == b.cpu().tolist()


def test_a_compiled_training_step_computes_the_eager_losses():
    torch.manual_seed(0)
    model = BlipPretrain(micro_config()).to(CUDA).train()
    batch = _batch(model.cfg)
    eager = _losses(model, batch, bf16=False)
    compiled = _losses(torch.compile(model), batch, bf16=False)
    for k in eager:
        assert compiled[k] == pytest.approx(eager[k], rel=1e-3, abs=1e-4), (k, eager, compiled)


def test_running_out_of_device_memory_is_one_line_naming_the_knob():
    from blip_core.machine import DeviceOutOfMemory, out_of_memory_hint

    with (
        pytest.raises(DeviceOutOfMemory) as e,
        out_of_memory_hint("pretrain training, step 1", "pretrain.batch_size", 4096),
    ):
        torch.empty(1 << 50, dtype=torch.uint8, device=CUDA)  # a petabyte
    msg = str(e.value)
    assert "\n" not in msg and "pretrain.batch_size = 4096" in msg and "lower pretrain.batch_size" in msg
