"""LoRA on nn.Conv2d (patch embeddings, ResNet and ConvNeXt convolutions), as peft's LoraConv2d.

The update is a convolution pair: lora_A has the base layer's kernel, stride and padding and r
output channels, lora_B is a 1x1 convolution from r to the base's output channels. Parameter
names are peft's (`<module>.lora_A.weight`, `<module>.lora_B.weight`), so an adapter written
here loads in peft and the reverse. LoraMethod picks this layer for Conv2d targets (lora.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.errors import MethodError
from tunelab.methods.base import AdapterLayer


def check_conv(name: str, base: nn.Conv2d) -> None:
    """Refuse what the update cannot mirror exactly (peft cannot merge grouped convolutions)."""
    if base.groups != 1:
        raise MethodError(f"method.targets: {name} is a grouped Conv2d (groups={base.groups}, "
                          "e.g. ConvNeXt's depthwise dwconv), which LoRA cannot merge; leave it "
                          "out of method.targets")
    if base.dilation != (1, 1) or base.padding_mode != "zeros":
        raise MethodError(f"method.targets: {name} is a Conv2d with dilation {base.dilation} / "
                          f"padding_mode {base.padding_mode!r}; LoRA supports plain convolutions "
                          "only; leave it out of method.targets")


class LoraConv2d(AdapterLayer):
    """Replaces an nn.Conv2d: y = conv(x, W) + b + s * conv1x1(conv(dropout(x), A), B)."""

    fan_in_fan_out = False  # read by peft_lora_config, as for LoraLinear
    adapter_name: str = "default"

    def __init__(self, base: nn.Conv2d, r: int, scaling: float, dropout: float):
        super().__init__()
        self.weight, self.bias = base.weight, base.bias  # the same Parameters: keys keep names
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.stride, self.padding = base.stride, base.padding
        self.in_channels, self.out_channels = base.in_channels, base.out_channels
        self.r, self.scaling = r, scaling
        w = self.weight
        self.lora_A = nn.Conv2d(self.in_channels, r, base.kernel_size, base.stride, base.padding,
                                bias=False, device=w.device, dtype=w.dtype)
        self.lora_B = nn.Conv2d(r, self.out_channels, 1, 1, bias=False, device=w.device,
                                dtype=w.dtype)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W) -> (B, C_out, H', W')
        out = self.base_forward(x)
        down = self.lora_A(self.lora_dropout(x))  # (B, r, H', W')
        return out + self.lora_B(down) * self.scaling

    def finish_init(self) -> None:
        """LoraLinear's hook after A and B are initialised; nothing to derive here."""

    def delta_weight(self) -> torch.Tensor:
        """The update as one kernel (C_out, C_in, kH, kW): B (C_out, r) applied over A's r
        output channels, which is what the 1x1 convolution after A computes."""
        b = self.lora_B.weight.flatten(1)  # (C_out, r)
        a = self.lora_A.weight  # (r, C_in, kH, kW)
        return torch.einsum("or,rihw->oihw", b, a) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """An nn.Conv2d holding the base kernel plus the update."""
        kernel = self.lora_A.kernel_size
        layer = nn.Conv2d(self.in_channels, self.out_channels, kernel, self.stride, self.padding,
                          bias=self.bias is not None, device=self.weight.device,
                          dtype=self.weight.dtype)
        layer.weight.copy_(self.weight + self.delta_weight().to(self.weight.dtype))
        if self.bias is not None:
            layer.bias.copy_(self.bias)
        return layer

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, "
                f"kernel={tuple(self.lora_A.kernel_size)}, r={self.r}, scaling={self.scaling:.4g}")
