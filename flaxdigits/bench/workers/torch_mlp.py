"""PyTorch peer: the seed MLP the fastest way a PyTorch user would write it.

Eager mode (torch.compile never helped this model here), the data preloaded as tensors on the
device, a fresh permutation per epoch, `Adam(fused=True)` where the build has it. MLP only.
"""

import time

from flaxdigits.bench.workers import common

args = common.parse_args()
if args.model != "mlp":
    common.report({"framework": "torch", "missing": "no PyTorch peer for the CNN"})
    raise SystemExit
try:
    import torch
    from torch import nn
except ImportError as e:
    common.missing("torch", e)
if args.threads:
    torch.set_num_threads(args.threads)

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
data = common.load(args)
x = torch.tensor(data.train_images.reshape(-1, 784), dtype=torch.float32, device=device) / 255
y = torch.tensor(data.train_labels, dtype=torch.int64, device=device)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10)).to(device)
try:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    fused = True
except (RuntimeError, TypeError):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fused = False
loss_fn = nn.CrossEntropyLoss()


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


n, seconds, first = len(x), [], True
for epoch in range(max(args.epochs, 1)):
    t0 = time.perf_counter()
    order = torch.randperm(n, device=device)
    for i in range(0, n, args.batch_size):
        idx = order[i:i + args.batch_size]
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if first:
            sync()
            first = False
            common.first_step()
            if args.epochs == 0:
                common.report({"framework": "torch"})
                raise SystemExit
    sync()
    seconds.append(time.perf_counter() - t0)

with torch.no_grad():
    x_test = torch.tensor(data.test_images.reshape(-1, 784), dtype=torch.float32,
                          device=device) / 255
    predicted = model(x_test).argmax(1).cpu().numpy()
common.report({
    "framework": "torch",
    "version": f"torch {torch.__version__}" + (" (fused Adam)" if fused else ""),
    "device": f"{device.type}" + (f": {torch.cuda.get_device_name()}" if device.type == "cuda"
                                  else f", {torch.get_num_threads()} threads"),
    "samples_per_epoch": n,
    "epoch_seconds": seconds,
    "compile_seconds": None,
    "test_accuracy": float((predicted == data.test_labels).mean()),
    "peak_rss_mb": common.peak_rss_mb(),
    "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
    else None,
})
