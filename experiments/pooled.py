"""Scratch: heads on mean-pooled prepared frames (cached), to find which part of a pooling model matters."""
import json, os, sys, time, math
import numpy as np, torch
from torch import nn
import torch.nn.functional as F
sys.path.insert(0, "experiments")
from proto import load, positions
from fewframes.models import prepare_frames
from fewframes.metrics import global_average_precision
torch.set_num_threads(1)

def pooled(X, lens, sel, k, rng=None):
    out = np.zeros((len(lens), 1152), np.float32)
    for i in range(len(lens)):
        if sel == "all": p = np.arange(lens[i])
        else: p = positions(sel, lens[i:i+1], k, rng or np.random.default_rng(0))[0][0]; p = p[p >= 0]
        out[i] = prepare_frames(torch.from_numpy(X[i, p])).mean(0).numpy()
    return out

class Head(nn.Module):
    def __init__(s, kind, C, hidden=64, dropout=0.5):
        super().__init__(); s.kind = kind
        s.bn = nn.BatchNorm1d(1152); s.c = nn.Parameter(torch.zeros(1152))
        s.h = nn.Linear(1152, hidden); s.g = nn.Linear(hidden, hidden); s.hbn = nn.BatchNorm1d(hidden)
        s.drop = nn.Dropout(dropout); s.drop_in = nn.Dropout(dropout)
        s.out = nn.Linear(1152 if kind in ("bn", "l2", "l2s") else hidden, C)
    def forward(s, m):
        k = s.kind
        if k == "bn": return s.out(s.drop(s.bn(m)))
        if k == "l2": return s.out(s.drop(F.normalize(m - s.c, dim=-1)))
        if k == "l2s": return s.out(s.drop(F.normalize(m - s.c, dim=-1) * 30))
        if k == "vlad1":  # NetVLAD K=1: l2(mean-c) -> hidden -> gating -> dropout -> linear
            h = s.h(F.normalize(m - s.c, dim=-1)); h = h * torch.sigmoid(s.g(h)); return s.out(s.drop(h))
        if k == "vlad1w":  # vlad1 with WILLOW's init of the hidden layer (N(0, 1/sqrt(K)), K=1)
            if not getattr(s, "_init", False):
                with torch.no_grad(): s.h.weight.normal_(0, 1.0); s.g.weight.normal_(0, 1 / math.sqrt(s.h.out_features)); s.g.bias.normal_(0, 1 / math.sqrt(s.h.out_features))
                s._init = True
            h = s.h(F.normalize(m - s.c, dim=-1)); h = h * torch.sigmoid(s.g(h)); return s.out(s.drop(h))
        if k == "vlad1_hbn":  # vlad1 with BN on the hidden projection (WILLOW's hidden1_bn), default init
            h = s.hbn(s.h(F.normalize(m - s.c, dim=-1))); h = h * torch.sigmoid(s.g(h)); return s.out(s.drop(h))
        if k == "vlad1w_hbn":  # the same with WILLOW's init
            if not getattr(s, "_init", False):
                with torch.no_grad(): s.h.weight.normal_(0, 1.0); s.g.weight.normal_(0, 1 / math.sqrt(s.h.out_features)); s.g.bias.normal_(0, 1 / math.sqrt(s.h.out_features))
                s._init = True
            h = s.hbn(s.h(F.normalize(m - s.c, dim=-1))); h = h * torch.sigmoid(s.g(h)); return s.out(s.drop(h))
        if k == "vlad1_din":  # + dropout on the pooled input
            h = s.h(s.drop_in(F.normalize(m - s.c, dim=-1))); h = h * torch.sigmoid(s.g(h)); return s.out(s.drop(h))
        if k == "bn_hidden":
            h = torch.relu(s.h(s.drop_in(s.bn(m)))); return s.out(s.drop(h))
        if k == "bn_vlad":  # BN instead of l2, then hidden + gating
            h = s.h(s.drop_in(s.bn(m))); h = h * torch.sigmoid(s.g(h)); return s.out(s.drop(h))
        raise ValueError(k)

def fit(kind, Ftr, Ytr, Fva, Yva, Fte, Yte, lr, epochs=100, patience=10, bs=32, seed=0, hidden=64, wd=1e-5):
    torch.manual_seed(seed); rng = np.random.default_rng(seed)
    C = Ytr.shape[1]; model = Head(kind, C, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd); sch = torch.optim.lr_scheduler.ExponentialLR(opt, 0.95)
    best, be, state, curve = -1, 0, None, []
    for ep in range(1, epochs + 1):
        model.train(); order = rng.permutation(len(Ftr))
        for j in range(0, len(order), bs):
            i = order[j:j+bs]
            loss = F.binary_cross_entropy_with_logits(model(torch.from_numpy(Ftr[i])), torch.from_numpy(Ytr[i]), reduction="sum") / len(i)
            opt.zero_grad(); loss.backward(); opt.step()
        sch.step(); model.eval()
        with torch.no_grad(): g = global_average_precision(torch.sigmoid(model(torch.from_numpy(Fva))).numpy(), Yva)
        curve.append(round(g, 4))
        if g > best: best, be, state = g, ep, {a: b.clone() for a, b in model.state_dict().items()}
        elif ep - be >= patience: break
    model.load_state_dict(state); model.eval()
    with torch.no_grad(): s = torch.sigmoid(model(torch.from_numpy(Fte))).numpy()
    return best, be, global_average_precision(s, Yte), s

if __name__ == "__main__":
    store = sys.argv[1]; cache = sys.argv[2]
    try:
        z = np.load(cache); feats = {k: z[k] for k in z.files}; Y = feats.pop("Y"); split = feats.pop("split")
    except FileNotFoundError:
        X, lens, Y, split = load(store); feats = {}
        for sel, k in [("all", None), ("uniform", 30), ("uniform", 10), ("uniform", 6)]:
            feats[f"{sel}{k or ''}"] = pooled(X, lens, sel, k)
        split = np.array(split, dtype=str)
        np.savez(cache, Y=Y, split=split, **feats)
    tr, va, te = (split == s for s in ("train", "validation", "test"))
    kinds = sys.argv[3].split(","); lrs = [float(x) for x in sys.argv[4].split(",")]
    views = sys.argv[5].split(",") if len(sys.argv) > 5 else list(feats)
    for kind in kinds:
        for lr in lrs:
            row = []
            for v in views:
                Fv = feats[v]
                b, be, g, _ = fit(kind, Fv[tr], Y[tr], Fv[va], Y[va], Fv[te], Y[te], lr, bs=int(os.environ.get("BS", 32)))
                row.append(f"{v}:{g:.4f}(ep{be})")
            print(kind, lr, " ".join(row), flush=True)
