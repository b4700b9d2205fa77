"""PyTorch peer: flaxdigits' networks the fastest way a PyTorch user would write them.

The seed MLP, or the CNN of `cnn-fast` (conv 5x5/2 32, conv 3x3/2 64, dense 128, the same
shapes; see `torch_nets`). Eager mode (torch.compile never helped the MLP here), the data
preloaded as tensors on the device, a fresh permutation per epoch, `Adam(fused=True)` where the
build has it; `--channels-last` runs the CNN in PyTorch's NHWC memory format, its fast path
for convolutions on CPU, and `--compile` runs it through `torch.compile` (its first epoch
includes compiling).
"""

import time

from flaxdigits.bench.workers import common

args = common.parse_args()
framework = "torch-cl" if args.channels_last else "torch-compile" if args.compile else "torch"
if (args.channels_last or args.compile) and args.model != "cnn":
    common.report({"framework": framework, "missing": f"{framework} is for the CNN"})
    raise SystemExit
try:
    import torch
    from torch import nn

    from flaxdigits.bench.workers import torch_nets
    from flaxdigits.config import ModelConfig
except ImportError as e:
    common.missing(framework, e)
if args.threads:
    torch.set_num_threads(args.threads)

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
data = common.load(args)
SHAPE = (-1, 784) if args.model == "mlp" else (-1, 1, 28, 28)
LAYOUT = torch.channels_last if args.channels_last else torch.contiguous_format
x = torch.tensor(data.train_images.reshape(SHAPE), dtype=torch.float32, device=device) / 255
x = x.contiguous(memory_format=LAYOUT) if args.model == "cnn" else x
y = torch.tensor(data.train_labels, dtype=torch.int64, device=device)
torch.manual_seed(0)
model = torch_nets.build(ModelConfig(kind=args.model)).to(device, memory_format=LAYOUT)
opt, fused = torch_nets.adam(model, lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
forward = torch.compile(model) if args.compile else model


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


n, seconds, first = len(x), [], True
for epoch in range(max(args.epochs, 1)):
    t0 = time.perf_counter()
    order = torch.randperm(n, device=device)
    for i in range(0, n, args.batch_size):
        idx = order[i:i + args.batch_size]
        loss = loss_fn(forward(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if first:
            sync()
            first = False
            common.first_step()
            if args.epochs == 0:
                common.report({"framework": framework})
                raise SystemExit
    sync()
    seconds.append(time.perf_counter() - t0)

with torch.no_grad():
    x_test = torch.tensor(data.test_images.reshape(SHAPE), dtype=torch.float32,
                          device=device) / 255
    x_test = x_test.contiguous(memory_format=LAYOUT) if args.model == "cnn" else x_test
    predicted = torch.cat([model(b).argmax(1) for b in x_test.split(1000)]).cpu().numpy()
common.report({
    "framework": framework,
    "version": f"torch {torch.__version__}" + (" (fused Adam)" if fused else "")
    + (", torch.compile" if args.compile else ""),
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
