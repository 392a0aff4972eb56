"""Scratch prototyping harness for the skyline study (not the library loop): frames held in memory,
the library's models/metrics/selection, early stopping on validation GAP. Sizes the effects quickly;
the recorded runs use fewframes.training (benchmarks/skyline_study.py)."""
import argparse, json, math, sys, time
import numpy as np, torch
from torch import nn
import torch.nn.functional as F
from fewframes.data.store import FrameStore
from fewframes.data.split import load_split
from fewframes.data.selection import select_frames
from fewframes.metrics import global_average_precision
from fewframes.models import prepare_frames, build_model, student_model_config
from fewframes.config import ModelConfig

torch.set_num_threads(1)

def load(path):
    store = FrameStore.open(path)
    n = len(store)
    split = np.full(n, "train", dtype=object)
    for name in ("validation", "test"):
        split[load_split(store, name)] = name
    frames, lens = [], []
    for i, f in store.iter_videos():
        frames.append(f); lens.append(len(f))
    lens = np.array(lens)
    X = np.zeros((n, lens.max(), 1152), np.uint8)
    for i, f in enumerate(frames):
        X[i, :len(f)] = f
    Y = store.labels_multi_hot(np.arange(n)).astype(np.float32)
    return X, lens, Y, split

class MeanPool(nn.Module):
    def __init__(s, C, hidden=0, dropout=0.5, bn=False):
        super().__init__()
        s.bn = nn.BatchNorm1d(1152) if bn else nn.Identity()
        s.hidden = nn.Sequential(nn.Linear(1152, hidden), nn.ReLU()) if hidden else nn.Identity()
        s.drop = nn.Dropout(dropout); s.out = nn.Linear(hidden or 1152, C)
    def forward(s, x, mask):
        m = mask.unsqueeze(-1).float()
        e = (x * m).sum(1) / m.sum(1).clamp_min(1)
        return s.out(s.drop(s.hidden(s.bn(e))))

class NetVLAD(nn.Module):
    """proj 1152->D, soft-assign to K clusters, residual aggregation, intra+L2 norm, dropout, linear."""
    def __init__(s, C, D=64, K=8, dropout=0.5, hidden=0):
        super().__init__()
        s.proj = nn.Linear(1152, D); s.assign = nn.Linear(D, K); s.centers = nn.Parameter(torch.randn(K, D) * 0.1)
        s.bn = nn.LayerNorm(D)
        s.hidden = nn.Sequential(nn.Linear(K * D, hidden), nn.ReLU()) if hidden else nn.Identity()
        s.drop = nn.Dropout(dropout); s.out = nn.Linear(hidden or K * D, C)
    def forward(s, x, mask):
        h = s.proj(x)
        a = torch.softmax(s.assign(h), -1) * mask.unsqueeze(-1).float()  # B T K
        v = torch.einsum("btk,btd->bkd", a, h) - a.sum(1).unsqueeze(-1) * s.centers
        v = v / mask.float().sum(1).clamp_min(1)[:, None, None]  # mean, not sum (k vs all comparable)
        v = F.normalize(v, dim=-1).flatten(1)
        v = F.normalize(v, dim=-1)
        return s.out(s.drop(s.hidden(v)))

class Willow(nn.Module):
    """Mirror of the families helper's netvlad (WILLOW NetVLADModelLF): VLAD of rgb (K) and audio (K//2)
    in input space, intra + L2 norm, hidden projection, context gating, dropout, linear."""
    def __init__(s, C, K=8, hidden=64, dropout=0.5):
        super().__init__()
        s.parts = [(1024, K), (128, max(1, K // 2))]
        s.assign = nn.ModuleList(nn.Linear(d, k) for d, k in s.parts)
        s.centres = nn.ParameterList(nn.Parameter(torch.randn(k, d) / math.sqrt(d)) for d, k in s.parts)
        for a, (d, k) in zip(s.assign, s.parts):
            nn.init.normal_(a.weight, 0, 1 / math.sqrt(d)); nn.init.normal_(a.bias, 0, 1 / math.sqrt(d))
        s.hidden = nn.Linear(sum(d * k for d, k in s.parts), hidden); nn.init.normal_(s.hidden.weight, 0, 1 / math.sqrt(K))
        s.gate = nn.Linear(hidden, hidden)
        s.drop = nn.Dropout(dropout); s.out = nn.Linear(hidden, C)
    def forward(s, x, mask):
        w = mask.unsqueeze(-1).float()
        vs = []
        for piece, a, c in zip(x.split([1024, 128], -1), s.assign, s.centres):
            asg = torch.softmax(a(piece), -1) * w
            v = torch.bmm(asg.transpose(1, 2), piece) - asg.sum(1).unsqueeze(-1) * c
            vs.append(F.normalize(F.normalize(v, dim=-1).flatten(1), dim=-1))
        h = s.hidden(torch.cat(vs, -1)); h = h * torch.sigmoid(s.gate(h))
        return s.out(s.drop(h))

class HRNN(nn.Module):
    def __init__(s, cfg):
        super().__init__(); s.m = build_model(cfg)
    def forward(s, x, mask):
        return s.m(x, None if bool(mask.all()) else mask).logits

def positions(sel, lens, k, rng):
    out = [select_frames(sel, int(l), k, rng) for l in lens]
    return np.stack([p for p, _ in out]), np.stack([m for _, m in out])

def batch(X, lens, idx, sel, k, rng):
    if sel == "all":
        T = int(lens[idx].max())
        x = torch.from_numpy(X[idx, :T])
        mask = torch.from_numpy(np.arange(T)[None] < lens[idx][:, None])
    else:
        p, m = positions(sel, lens[idx], k, rng)
        x = torch.from_numpy(X[idx[:, None], np.where(p < 0, 0, p)])
        mask = torch.from_numpy(m)
    return prepare_frames(x), mask

def scores(model, X, lens, idx, sel, k, bs=128):
    model.eval(); out = []
    rng = np.random.default_rng(123)
    with torch.inference_mode():
        for j in range(0, len(idx), bs):
            x, m = batch(X, lens, idx[j:j+bs], sel, k, rng)
            out.append(torch.sigmoid(model(x, m)).numpy())
    model.train(); return np.concatenate(out)

def run(data, family, sel, k, C, lr=3e-3, bs=32, max_epochs=40, patience=5, seed=0, decay=0.95, wd=1e-5, **kw):
    X, lens, Y, split = data
    tr, va, te = (np.flatnonzero(split == s) for s in ("train", "validation", "test"))
    torch.manual_seed(seed); rng = np.random.default_rng(seed)
    if family == "mean": model = MeanPool(C, kw.get("hidden", 0), kw.get("dropout", 0.5), kw.get("bn", False))
    elif family == "netvlad": model = NetVLAD(C, kw.get("D", 64), kw.get("K", 8), kw.get("dropout", 0.5), kw.get("hidden", 0))
    elif family == "willow": model = Willow(C, kw.get("K", 8), kw.get("hidden", 64), kw.get("dropout", 0.5))
    elif family == "lib":  # a registry family, built by the library
        from fewframes.models import build_model as lib_build, student_model_config as lib_student
        cfg = ModelConfig(num_classes=C, family=kw["fam"], **{a: b for a, b in kw.items() if a != "fam"})
        if sel != "all": cfg = lib_student(cfg, k)
        model = HRNN.__new__(HRNN); nn.Module.__init__(model); model.m = lib_build(cfg)
    elif family == "hrnn":
        cfg = ModelConfig(num_classes=C, hidden_size=kw.get("hidden", 32), num_layers=2, block_length=20,
                          dropout=kw.get("dropout", 0.5), encoding=kw.get("encoding", "state"))
        if sel != "all": cfg = student_model_config(cfg, k)
        model = HRNN(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
    best, best_ep, curve, t0 = -1, 0, [], time.time()
    best_state = None
    for ep in range(1, max_epochs + 1):
        order = rng.permutation(tr)
        for j in range(0, len(order), bs):
            idx = np.sort(order[j:j+bs])
            x, m = batch(X, lens, idx, sel, k, rng)
            loss = F.binary_cross_entropy_with_logits(model(x, m), torch.from_numpy(Y[idx]), reduction="sum") / len(idx)
            opt.zero_grad(); loss.backward(); opt.step()
        sched.step()
        g = global_average_precision(scores(model, X, lens, va, sel, k), Y[va]); curve.append(round(g, 4))
        print(f"   ep {ep} val {g:.4f} {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        if g > best:
            best, best_ep = g, ep; best_state = {a: b.clone() for a, b in model.state_dict().items()}
        elif ep - best_ep >= patience: break
    model.load_state_dict(best_state)
    s = scores(model, X, lens, te, sel, k)
    return dict(family=family, sel=sel, k=k, lr=lr, bs=bs, seed=seed, kw=kw, best_epoch=best_ep, val_gap=round(best, 4),
                test_gap=round(global_average_precision(s, Y[te]), 4), curve=curve, seconds=round(time.time() - t0, 1), test_scores=s)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("store"); ap.add_argument("--family", default="mean"); ap.add_argument("--runs", default="all:0,uniform:30,uniform:10,uniform:6")
    ap.add_argument("--lr", type=float, default=3e-3); ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=40); ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--kw", default="{}"); ap.add_argument("--seed", type=int, default=0); ap.add_argument("--out", default="")
    a = ap.parse_args()
    data = load(a.store); C = data[2].shape[1]
    results = []
    for spec in a.runs.split(","):
        sel, k = spec.split(":"); k = int(k) or None
        r = run(data, a.family, sel, k, C, a.lr, a.bs, a.epochs, a.patience, a.seed, **json.loads(a.kw))
        sc = r.pop("test_scores"); results.append((r, sc))
        print(json.dumps(r), flush=True)
    # paired bootstrap of teacher (first run) minus each other run
    X, lens, Y, split = data; te = np.flatnonzero(split == "test")
    rng = np.random.default_rng(0); B = [rng.integers(0, len(te), len(te)) for _ in range(300)]
    s0 = results[0][1]
    for r, sc in results[1:]:
        d = [global_average_precision(s0[b], Y[te][b]) - global_average_precision(sc[b], Y[te][b]) for b in B]
        print(f"  {results[0][0]['sel']} - {r['sel']}-{r['k']}: {results[0][0]['test_gap']-r['test_gap']:+.4f} [{np.percentile(d,2.5):+.4f}, {np.percentile(d,97.5):+.4f}]", flush=True)
    if a.out:
        json.dump([r for r, _ in results], open(a.out, "w"), indent=1)
