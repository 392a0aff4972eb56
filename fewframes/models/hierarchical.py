"""The paper's hierarchical LSTM encoder, the shared classifier, and the teacher/student model around them.

A video's frames are cut into blocks of ``l`` frames (``ModelConfig.block_length``). A lower LSTM encodes
every block of the whole batch in ONE ``nn.LSTM`` call ([B, nblocks, l, D] -> [B*nblocks, l, D]); an upper
LSTM encodes each video's sequence of block encodings; the video encoding E is the upper LSTM's final state.

Choices the paper leaves open (also in ``docs/method.md``):

- Input: uint8 frames are dequantised with YouTube-8M's formula, float frames are taken as already
  dequantised. The rgb part (first 1024) and the audio part (last 128) are each L2-normalised per frame, as
  in the authors' code (when ``feature_dim`` is not 1152 the whole vector is normalised).
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
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from fewframes.config import AUDIO_DIM, FEATURE_DIM, RGB_DIM, ModelConfig
from fewframes.errors import ModelError

# YouTube-8M quantisation: x = q * (4/255) + (4/512 - 2), range about [-2, 2].
_QUANT_SCALE = 4.0 / 255.0
_QUANT_BIAS = 4.0 / 512.0 - 2.0


def dequantize_frames(frames: Tensor) -> Tensor:
    """uint8 YouTube-8M frame features -> float32 with the official formula; float input passes through."""
    if frames.dtype == torch.uint8:
        return frames.to(torch.float32) * _QUANT_SCALE + _QUANT_BIAS
    if not frames.is_floating_point():
        raise ModelError(f"frames must be uint8 (quantised) or float, got dtype {frames.dtype}")
    return frames


def prepare_frames(frames: Tensor) -> Tensor:
    """Dequantise, then L2-normalise rgb and audio separately per frame (as the authors' code does).

    Returns a new float tensor. uint8 input (the frames of every batch) takes a fast path: the scale 4/255 of
    the dequantisation formula cancels in the normalisation, so only the offset is added, into a contiguous
    copy normalised in place: the frames are the largest tensor of the model and this saves several passes
    over them. Float input (already dequantised, maybe requiring grad) and tracing take the functional path.
    """
    # Tracing (ONNX/TorchScript export) records in-place ops on split views wrongly: functional path there.
    if frames.dtype != torch.uint8 or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        features = dequantize_frames(frames)
        if features.shape[-1] != FEATURE_DIM:
            return F.normalize(features, dim=-1)
        rgb, audio = features.split([RGB_DIM, AUDIO_DIM], dim=-1)
        return torch.cat([F.normalize(rgb, dim=-1), F.normalize(audio, dim=-1)], dim=-1)
    features = frames.to(torch.float32, memory_format=torch.contiguous_format).add_(_QUANT_BIAS / _QUANT_SCALE)
    parts = features.split([RGB_DIM, AUDIO_DIM], dim=-1) if features.shape[-1] == FEATURE_DIM else (features,)
    for part in parts:
        part.div_(torch.linalg.vector_norm(part, dim=-1, keepdim=True).clamp_min_(1e-12))
    return features


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


class EncoderOutput(NamedTuple):
    """What ``HierarchicalEncoder`` returns.

    encoding: E, [B, encoding_dim]. intermediate: [B, T, hidden_size] (lower LSTM's top-layer output at each
    input slot, zero at padding) or None unless asked for. block_states: [B, nblocks, hidden_size], each
    block's encoding fed to the upper LSTM (zero for dropped all-padding blocks). block_mask: [B, nblocks]
    bool, True for blocks holding at least one real frame.
    """

    encoding: Tensor
    intermediate: Tensor | None
    block_states: Tensor
    block_mask: Tensor


class ModelOutput(NamedTuple):
    """What ``VideoClassifier`` returns: logits [B, C] (sigmoid in the loss/at inference), E, intermediate."""

    logits: Tensor
    encoding: Tensor
    intermediate: Tensor | None


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
        if self.encoding_kind == "state":
            return 2 * self.num_layers * self.hidden_size
        return self.hidden_size

    def _check(self, frames: Tensor, mask: Tensor | None) -> None:
        if frames.dim() != 3 or frames.shape[-1] != self.feature_dim:
            raise ModelError(
                f"frames must be [batch, frames, {self.feature_dim}], got shape {tuple(frames.shape)}"
            )
        if frames.shape[1] < 1:
            raise ModelError("frames holds no frame slot (shape[1] == 0)")
        if mask is not None:
            if mask.dtype != torch.bool or tuple(mask.shape) != tuple(frames.shape[:2]):
                raise ModelError(
                    f"mask must be bool [batch, frames] = {tuple(frames.shape[:2])}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )

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
        self._check(frames, mask)
        dense = mask is None
        if not dense and not torch.jit.is_tracing() and not torch.jit.is_scripting():
            dense = bool(mask.all())
        if dense:
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
        return prepare_frames(time_major).transpose(0, 1)

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


class Classifier(nn.Module):
    """Dropout then one linear layer: a logit per class (one sigmoid per class lives in the loss/inference).

    A separate module so a teacher and a student can hold the very same object (parameter sharing).
    """

    def __init__(self, encoding_dim: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(encoding_dim, num_classes)

    def forward(self, encoding: Tensor) -> Tensor:
        """E [B, encoding_dim] -> logits [B, num_classes]."""
        return self.linear(self.dropout(encoding))


class VideoClassifier(nn.Module):
    """A hierarchical encoder and a (possibly shared) classifier: the teacher, a student or a baseline."""

    def __init__(self, encoder: HierarchicalEncoder, classifier: Classifier) -> None:
        super().__init__()
        if classifier.linear.in_features != encoder.encoding_dim:
            raise ModelError(
                f"classifier expects encodings of size {classifier.linear.in_features}, "
                f"the encoder gives {encoder.encoding_dim}"
            )
        self.encoder = encoder
        self.classifier = classifier

    @property
    def config(self) -> ModelConfig:
        """The encoder's ModelConfig (block_length is the model's own l: 20 for a teacher, l(k) for a student)."""
        return self.encoder.config

    def forward(self, frames: Tensor, mask: Tensor | None = None, return_intermediate: bool = False) -> ModelOutput:
        """frames uint8/float [B, T, D], mask bool [B, T] or None (all real) -> ModelOutput."""
        encoded = self.encoder(frames, mask, return_intermediate=return_intermediate)
        return ModelOutput(self.classifier(encoded.encoding), encoded.encoding, encoded.intermediate)


def build_model(config: ModelConfig, classifier: Classifier | None = None) -> VideoClassifier:
    """A VideoClassifier for ``config``; pass ``classifier`` to share one (a student plugging in the teacher's)."""
    encoder = HierarchicalEncoder(config)
    if classifier is None:
        classifier = Classifier(encoder.encoding_dim, config.num_classes, config.dropout)
    return VideoClassifier(encoder, classifier)


def student_model_config(teacher_config: ModelConfig, k: int, block_length: int | None = None) -> ModelConfig:
    """The student's ModelConfig: the teacher's sizes (so E and the classifier match), l = student_block_length(k)."""
    return teacher_config.replace(block_length=block_length or student_block_length(k))
