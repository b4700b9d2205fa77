"""PyTorch worker for time to accuracy: a flaxdigits recipe written in PyTorch, trained until the
test accuracy reaches every target (the report has flaxdigits_time_to's form).

    python -m flaxdigits.bench.workers.torch_time_to DATA_DIR RECIPE TARGET [TARGET ...]
        [--seed S] [--n-train N] [--threads T]

The recipe's network (`torch_nets.build`), Adam or AdamW (fused where the build has it) under
its learning-rate schedule, label smoothing, and its augmentation on the fly per batch
(`torch_nets.affine`); the data preloaded as tensors on the device (a CUDA GPU if there is
one), a fresh permutation per epoch, the last partial batch dropped, as flaxdigits does. Test
accuracy after every epoch, outside the timing.
"""

import time

from flaxdigits.bench.workers import common

args = common.parse_time_to_args()

from flaxdigits.recipes import recipe  # noqa: E402

try:
    import torch
    from torch import nn

    from flaxdigits.bench.workers import torch_nets
except ImportError as e:
    common.missing("torch", e)
if args.threads:
    torch.set_num_threads(args.threads)

config = recipe(args.recipe)
data = common.load(args)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
shape = (-1, 784) if config.model.kind == "mlp" else (-1, 1, 28, 28)
x = torch.tensor(data.train_images.reshape(-1, 1, 28, 28), dtype=torch.float32,
                 device=device) / 255
y = torch.tensor(data.train_labels, dtype=torch.int64, device=device)
x_test = torch.tensor(data.test_images.reshape(shape), dtype=torch.float32, device=device) / 255
torch.manual_seed(args.seed)
generator = torch.Generator(device=device).manual_seed(args.seed)
model = torch_nets.build(config.model).to(device)
opt, _ = torch_nets.adam(model, config.lr, config.weight_decay)
steps = len(x) // config.batch_size
total, warmup = config.epochs * steps, int(config.warmup_epochs * steps)
schedule = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: torch_nets.warmup_cosine(s, min(warmup, total - 1), total)
    if config.schedule == "cosine" else 1.0)
loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

history = []
for epoch in range(config.epochs):
    model.train()
    t0 = time.perf_counter()
    order = torch.randperm(len(x), generator=generator, device=device)
    for i in range(steps):
        idx = order[i * config.batch_size:(i + 1) * config.batch_size]
        batch = x[idx]
        if config.augment.enabled:
            batch = torch_nets.affine(batch, config.augment, generator)
        loss = loss_fn(model(batch.reshape(shape)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(b).argmax(1) for b in x_test.split(1000)]).cpu().numpy()
    history.append({"epoch": epoch + 1, "seconds": seconds,
                    "test_accuracy": float((predicted == data.test_labels).mean())})
    if history[-1]["test_accuracy"] >= max(args.targets):
        break

common.report({
    "framework": "torch",
    "version": f"torch {torch.__version__}",
    "device": f"cuda: {torch.cuda.get_device_name()}" if device.type == "cuda"
    else f"cpu, {torch.get_num_threads()} threads",
    "recipe": args.recipe, "seed": args.seed, "compute_dtype": "float32",
    "compile_seconds": None,
    "test_accuracy": [h["test_accuracy"] for h in history],
    "targets": {str(t): common.time_to(history, t) for t in args.targets},
})
