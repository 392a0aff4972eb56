"""The ``hrnn`` family: the paper's hierarchical LSTM encoder (the classifier and model: ``base.py``).

A video's frames are cut into blocks of ``l`` frames (``ModelConfig.block_length``). A lower LSTM encodes
every block of the whole batch in ONE ``nn.LSTM`` call ([B, nblocks, l, D] -> [B*nblocks, l, D]); an upper
LSTM encodes each video's sequence of block encodings; the video encoding E is the upper LSTM's final state.

Choices the paper leaves open (also in ``docs/method.md``):

- Input: uint8 frames are dequantised with YouTube-8M's formula, float frames are taken as already
  dequantised. The rgb part (first 1024) and the audio part (last 128) are each L2-normalised per frame, as
  in the authors' code (``ModelConfig.parts``: another extractor's widths as the store says, e.g. 2048 + 128;
  when ``feature_dim`` is not 1152 and no ``audio_dim`` is given the whole vector is normalised).
- Masks: ``mask[b, t]`` is True for a real frame. Real frames are read in slot order wherever they sit
  (padding in the middle is squeezed out), so a video's E depends only on its real frames: padding never
  changes E. Blocks are cut from the real frames and blocks that would hold only padding are dropped
  before the lower LSTM runs. A video's last block may be short: it is zero-padded and its state read at
  its last real frame (the LSTM is causal, so this equals packing it; a dense oneDNN/cuDNN call measured
  20-30% faster than a packed one on CPU). The upper LSTM is packed by each video's block count, since
  its final (c, h) must stop at the video's last block.
- Block encoding: the top lower-LSTM layer's hidden state after the block's last real frame.
- E (``ModelConfig.encoding``): "state" (default) = final (c, h) of every upper layer, concatenated layer by
  layer as [c_1, h_1, c_2, h_2, ...] (TF's MultiRNNCell state order, 2*num_layers*hidden_size = the paper's
  4096 at hidden 1024); "hidden" = the top layer's final h.
- Intermediate representation (for L_rep^I): the top lower-LSTM layer's output at every input slot,
  [B, T, hidden_size], zero at padding slots. Each frame's vector depends on the earlier frames of its own
  block only.
- A video with no real frame at all gets the encoding of one all-zero block (no crash, no NaN).
- LSTM forget-gate biases start at 1 (TF's ``forget_bias=1.0``, which the authors' LSTM cells used).
- Dropout (``ModelConfig.dropout``, the paper's 0.5) sits before the classifier only.
- Fast path: ``mask=None`` (or an all-True mask in eager mode) means every slot is a real frame; the model
  then runs dense LSTM calls with no packing and no data-dependent control flow (tracing/ONNX friendly;
  students see exactly k frames). It gives the same E as the packed path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from fewframes.config import ModelConfig
from fewframes.errors import ModelError
from fewframes.models.base import (
    Classifier,
    EncoderOutput,
    ModelFamily,
    ModelOutput,
    VideoClassifier,
    all_real,
    check_frames,
    dequantize_frames,
    prepare_frames,
)


def student_block_length(k: int) -> int:
    """The student's block length l for k frames: 5 when k >= 10 and 5 divides k, else 3 (never above k).

    The paper sets l to "5 or 3 depending on" k: k=6 -> 3 (2 blocks), k=10/15/20/30 -> 5 (2/3/4/6 blocks).
    Other k: 3 (k=7 -> blocks of 3, 3, 1; k=12 -> 4 blocks of 3); k < 3 -> k (one block).
    """
    if k < 1:
        raise ModelError(f"k (frames the student reads) must be >= 1, got {k}")
    if k >= 10 and k % 5 == 0:
        return 5
    return min(3, k)


def _forget_bias_one(lstm: nn.LSTM) -> None:
    # PyTorch orders gates (input, forget, cell, output); one of the two bias vectors carries the +1.
    hidden = lstm.hidden_size
    with torch.no_grad():
        for name, param in lstm.named_parameters():
            if name.startswith("bias_ih"):
                param[hidden : 2 * hidden].fill_(1.0)
            elif name.startswith("bias_hh"):
                param[hidden : 2 * hidden].fill_(0.0)


class HierarchicalEncoder(nn.Module):
    """Lower LSTM over blocks of ``config.block_length`` frames, upper LSTM over the block encodings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.block_length = config.block_length
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_layers
        self.feature_dim = config.feature_dim
        self.encoding_kind = config.encoding
        self.lower = nn.LSTM(config.feature_dim, config.hidden_size, config.num_layers, batch_first=True)
        self.upper = nn.LSTM(config.hidden_size, config.hidden_size, config.num_layers, batch_first=True)
        _forget_bias_one(self.lower)
        _forget_bias_one(self.upper)

    @property
    def encoding_dim(self) -> int:
        """Size of E: 2 * num_layers * hidden_size for "state", hidden_size for "hidden"."""
        return hierarchical_encoding_dim(self.config)

    def _state_encoding(self, h_n: Tensor, c_n: Tensor) -> Tensor:
        # h_n, c_n: [num_layers, B, H] -> E
        if self.encoding_kind == "hidden":
            return h_n[-1]
        state = torch.stack([c_n, h_n], dim=1)  # [L, 2, B, H]: per layer (c, h), TF's order
        return state.permute(2, 0, 1, 3).reshape(h_n.shape[1], -1)

    def forward(self, frames: Tensor, mask: Tensor | None = None, return_intermediate: bool = False) -> EncoderOutput:
        """Encode a batch of videos.

        frames: uint8 (quantised) or float [B, T, feature_dim]; mask: bool [B, T], True = real frame, or None
        when every slot is real (the dense fast path). Returns ``EncoderOutput``.
        """
        check_frames(frames, mask, self.feature_dim)
        if all_real(mask):
            return self._forward_dense(frames, return_intermediate)
        return self._forward_packed(frames, mask, return_intermediate)

    def _blocks_time_major(self, frames: Tensor, kept: Tensor | None = None) -> Tensor:
        """[B, T, D] raw frames (T a multiple of l) -> prepared blocks as a [n, l, D] view of a [l, n, D] tensor.

        nn.LSTM(batch_first=True) runs time-major inside (oneDNN and cuDNN alike) and would copy a
        batch-first input; building the blocks time-major (on the raw, maybe uint8, frames: the cheap bytes)
        makes its transpose free.
        """
        batch, slots, dim = frames.shape
        time_major = frames.reshape(batch * (slots // self.block_length), self.block_length, dim).transpose(0, 1)
        if kept is not None:
            time_major = time_major.index_select(1, kept)
        return prepare_frames(time_major, self.config.parts).transpose(0, 1)

    def _forward_dense(self, frames: Tensor, return_intermediate: bool) -> EncoderOutput:
        batch, slots, _ = frames.shape
        l = self.block_length
        nblocks = math.ceil(slots / l)
        pad = nblocks * l - slots
        if pad:
            frames = F.pad(frames, (0, 0, 0, pad))  # after the last real frame: the LSTM is causal, so unused
        out, _ = self.lower(self._blocks_time_major(frames))
        out = out.reshape(batch, nblocks, l, self.hidden_size)
        last_in_last_block = (slots - 1) - (nblocks - 1) * l
        block_states = torch.cat([out[:, :-1, l - 1], out[:, -1:, last_in_last_block]], dim=1)
        _, (h_n, c_n) = self.upper(block_states)
        intermediate = out.reshape(batch, nblocks * l, self.hidden_size)[:, :slots] if return_intermediate else None
        block_mask = torch.ones(batch, nblocks, dtype=torch.bool, device=frames.device)
        return EncoderOutput(self._state_encoding(h_n, c_n), intermediate, block_states, block_mask)

    def _forward_packed(self, frames: Tensor, mask: Tensor, return_intermediate: bool) -> EncoderOutput:
        batch, slots, dim = frames.shape
        l = self.block_length
        device = frames.device
        lengths = mask.sum(dim=1)  # real frames per video

        # Squeeze real frames to the front, keeping their order (a no-op gather skipped for the usual
        # right-padded masks). Done on the raw (maybe uint8) tensor: 4x fewer bytes than float.
        order: Tensor | None = None
        if not bool((mask[:, 1:] <= mask[:, :-1]).all()):
            order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
            frames = frames.gather(1, order.unsqueeze(-1).expand(-1, -1, dim))
        nblocks = math.ceil(slots / l)
        pad = nblocks * l - slots
        if pad:
            frames = F.pad(frames, (0, 0, 0, pad))
        starts = torch.arange(nblocks, device=device) * l
        block_lengths = (lengths.unsqueeze(1) - starts.unsqueeze(0)).clamp(0, l)  # [B, nblocks]
        block_mask = block_lengths > 0
        kept = block_mask.reshape(-1).nonzero().squeeze(1)  # all-padding blocks are dropped here
        kept_blocks = self._blocks_time_major(frames, kept)

        # One dense call over every kept block. A video's short last block is zero-padded rather than packed:
        # the LSTM is causal, so reading its output at the block's last real frame gives exactly the packed
        # result, and oneDNN/cuDNN run dense batches several times faster than packed ones on CPU.
        hidden = self.hidden_size
        lower_out, _ = self.lower(kept_blocks)  # [n_kept, l, H]
        last_real = block_lengths.reshape(-1).index_select(0, kept) - 1
        kept_states = lower_out[torch.arange(kept.numel(), device=device), last_real]
        block_states = kept_states.new_zeros(batch * nblocks, hidden).index_copy(0, kept, kept_states)
        block_states = block_states.reshape(batch, nblocks, hidden)

        # A video with no real frame still gets one (all-zero) block so packing never sees length 0.
        video_blocks = torch.div(lengths + (l - 1), l, rounding_mode="floor").clamp(min=1)
        packed_blocks = pack_padded_sequence(block_states, video_blocks.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, c_n) = self.upper(packed_blocks)
        encoding = self._state_encoding(h_n, c_n)

        intermediate: Tensor | None = None
        if return_intermediate:
            full = lower_out.new_zeros(batch * nblocks, l, hidden).index_copy(0, kept, lower_out)
            intermediate = full.reshape(batch, nblocks * l, hidden)[:, :slots]
            if order is not None:  # put each frame's vector back in the slot it came from
                intermediate = torch.zeros_like(intermediate).scatter(
                    1, order.unsqueeze(-1).expand(-1, -1, hidden), intermediate
                )
            intermediate = intermediate * mask.unsqueeze(-1).to(intermediate.dtype)
        return EncoderOutput(encoding, intermediate, block_states, block_mask)


def hierarchical_encoding_dim(config: ModelConfig) -> int:
    """Size of E for ``config.encoding``: 2 * num_layers * hidden_size ("state") or hidden_size ("hidden")."""
    return 2 * config.num_layers * config.hidden_size if config.encoding == "state" else config.hidden_size


def hierarchical_student_config(teacher_config: ModelConfig, k: int, block_length: int | None = None) -> ModelConfig:
    """The student's ModelConfig: the teacher's sizes (so E and the classifier match), l = student_block_length(k)."""
    return teacher_config.replace(block_length=block_length or student_block_length(k))


def lstm_flops(rows: int, input_size: int, hidden_size: int, num_layers: int) -> int:
    """Gate-matmul FLOPs of a stacked LSTM that processes ``rows`` (sequence, step) pairs.

    Layer 1 multiplies by W_ih (4H x input) and W_hh (4H x H); later layers take H inputs. 2 FLOPs per MAC.
    """
    per_row = 4 * hidden_size * (input_size + hidden_size)
    per_row += (num_layers - 1) * 4 * hidden_size * (2 * hidden_size)
    return 2 * rows * per_row


def hierarchical_encoder_flops(config: ModelConfig, n_frames: int, *, padded: bool = True) -> int:
    """Analytic gate-matmul FLOPs of the two LSTMs for one video of ``n_frames`` frames.

    The lower LSTM runs over b = ceil(n/l) blocks of l frames, the upper LSTM over the b block encodings.
    ``padded=True`` is what the encoder executes on both its paths: a short last block is zero-padded to l
    steps (the state is read at the last real frame) and blocks of pure padding are dropped.
    ``padded=False`` counts a fully packed LSTM (only real frames executed).
    """
    if n_frames < 1:
        raise ModelError(f"n_frames must be >= 1, got {n_frames}")
    blocks = math.ceil(n_frames / config.block_length)
    lower_rows = blocks * config.block_length if padded else n_frames
    lower = lstm_flops(lower_rows, config.feature_dim, config.hidden_size, config.num_layers)
    upper = lstm_flops(blocks, config.hidden_size, config.hidden_size, config.num_layers)
    return lower + upper


FAMILY = ModelFamily(
    name="hrnn",
    encoder=HierarchicalEncoder,
    encoding_dim=hierarchical_encoding_dim,
    student_config=hierarchical_student_config,
    encoder_flops=hierarchical_encoder_flops,
    intermediate="the lower LSTM's top-layer output at each frame, [B, T, hidden_size]",
)

# Classifier, EncoderOutput, ModelOutput, VideoClassifier and the frame helpers lived here before the other
# families came; still importable from this module.
__all__ = [
    "FAMILY",
    "Classifier",
    "EncoderOutput",
    "HierarchicalEncoder",
    "ModelOutput",
    "VideoClassifier",
    "dequantize_frames",
    "hierarchical_encoder_flops",
    "hierarchical_encoding_dim",
    "hierarchical_student_config",
    "lstm_flops",
    "prepare_frames",
    "student_block_length",
]
