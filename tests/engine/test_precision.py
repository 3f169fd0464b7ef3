"""trainer.precision=half: a bf16 network (fp32 norm layers) beside fp32 master weights, on the CPU (bf16
convolutions run there; fp16 needs CUDA for its GradScaler)."""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from cifarbench.aug.mix import NoMix
from cifarbench.commands.predict import load_trained
from cifarbench.engine import step as step_module
from cifarbench.engine.averaging import Lookahead
from cifarbench.engine.build import compile_warm_up_runs
from cifarbench.engine.loop import train
from cifarbench.engine.precision import MasterWeights
from cifarbench.engine.step import Plan, TrainStep
from cifarbench.run.checkpoint import load_checkpoint

HALF = ("model=lenet_bn", "model.width=0.2", "trainer.amp=bf16", "trainer.precision=half", "trainer.device=cpu",
        "sched=constant", "data.train_subset=32", "data.test_subset=20", "trainer.batch_size=16",
        "trainer.eval_batch_size=20", "trainer.deterministic=true", "trainer.progress=false", "trainer.plots=none")


def test_half_copy_computes_in_bf16_with_fp32_norms_and_a_few_master_steps_lower_the_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4))
    master = MasterWeights(model, torch.bfloat16)
    half = master.half
    assert [p.dtype for p in half.parameters()] == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32,
                                                    torch.bfloat16, torch.bfloat16]  # conv, BN (shared), linear
    assert half[1] is model[1] and half[1].running_var.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.randn(16, 3, 8, 8), torch.arange(16) % 4
    losses = []
    for _ in range(5):
        logits = half(images)
        assert logits.dtype == torch.float32  # the loss is computed in fp32
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        master.grads_to_master()
        assert model[0].weight.grad.dtype == torch.float32
        optimizer.step()
        master.zero_grad()  # (in place of the optimizer's: the master's gradient buffers stay bound)
        assert all(p.grad is None for p in master.copies) and model[1].weight.grad is None  # (BN: shared)
        master.weights_to_half()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(state["momentum_buffer"].dtype == torch.float32 for state in optimizer.state.values())
    assert torch.equal(half[0].weight, model[0].weight.to(torch.bfloat16))  # the master, rounded


def test_half_run_resumes_exactly_and_inspect_evaluates_it_as_the_run_did(tmp_path, fake_cifar_root, compose_with):
    """2 epochs of 2 steps straight, against 1 epoch then a resume for the second: the same master
    weights and optimizer state, bit for bit; the checkpoint holds fp32; load_trained evaluates the bf16
    network to the run's own final accuracy and loss."""
    from cifarbench.data.loader import DeviceLoader
    from cifarbench.data import load_cifar10
    from cifarbench.engine.evaluate import evaluate

    straight = train(compose_with(*HALF, "trainer.epochs=2", f"data.root={fake_cifar_root}"), tmp_path / "straight")
    train(compose_with(*HALF, "trainer.epochs=1", f"data.root={fake_cifar_root}"), tmp_path / "resumed")
    resumed = train(compose_with(*HALF, "trainer.epochs=2", f"data.root={fake_cifar_root}",
                                 f"trainer.resume={tmp_path / 'resumed' / 'checkpoints' / 'last.pt'}"),
                    tmp_path / "resumed")
    assert straight["precision"] == "half" and straight["steps"] == resumed["steps"] == 4
    a, b = (load_checkpoint(tmp_path / run / "checkpoints" / "last.pt") for run in ("straight", "resumed"))
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    assert all(v.dtype == torch.float32 for v in a.model.values() if v.is_floating_point())
    assert all(torch.equal(x, y) for x, y in zip(a.optimizer["state"][0].values(), b.optimizer["state"][0].values()))
    assert resumed["final_test_acc"] == straight["final_test_acc"]

    trained = load_trained(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert trained.half == torch.bfloat16 and trained.describe().split(", precision ")[1].startswith("bfloat16 network")
    data = load_cifar10(fake_cifar_root, download=False)
    loader = DeviceLoader(torch.from_numpy(data.test_images[:20]), torch.from_numpy(data.test_labels[:20]), 20,
                          trained.preprocess, shuffle=False)
    loss, acc, _ = evaluate(trained.model, loader)
    assert (acc, loss) == (straight["final_test_acc"], straight["final_test_loss"])



def half_step(lookahead_every: int | None = None):
    """A bf16 Linear(2, 2) beside its fp32 master, SGD with momentum, the bias in a group of
    train_epochs 1 (the whitening bias's rule) at 2 steps an epoch, 4 steps planned."""
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    master = MasterWeights(model, torch.bfloat16)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "train_epochs": 1}], lr=0.1,
                                momentum=0.9)
    lookahead = Lookahead(model, every=lookahead_every) if lookahead_every else None
    step = TrainStep(model, master.half, optimizer, torch.amp.GradScaler("cpu", enabled=False), NoMix(),
                     contextlib.nullcontext(), lambda *_: 1.0, Plan(4, 2), lookahead=lookahead, master=master)
    return model, master, optimizer, step


X, LABEL = torch.tensor([[3.0, 4.0]]), torch.tensor([0])


def test_under_half_a_group_past_its_epochs_gets_no_gradient_in_the_half_copy_and_is_frozen_once(monkeypatch):
    """Review 2-3: from the first step of epoch 2 the half copy's bias requires no gradient and the
    backward gives it none; the master bias and its momentum stay exactly as after epoch 1 while the
    weight trains on; freeze_after_epochs runs once (at step 2), not at every later step."""
    model, master, optimizer, step = half_step()
    freezes = []
    freeze = step_module.freeze_after_epochs
    monkeypatch.setattr(step_module, "freeze_after_epochs", lambda group: (freezes.append(group), freeze(group)))
    half_bias_grads = []
    to_master = master.grads_to_master
    monkeypatch.setattr(master, "grads_to_master", lambda: (half_bias_grads.append(master.half.bias.grad),
                                                           to_master()))
    for i in range(2):
        step(X, LABEL, i, 0.0)
    assert freezes == [] and half_bias_grads[1] is not None  # (epoch 1: the bias trains)
    bias, momentum, weight = (model.bias.clone(), optimizer.state[model.bias]["momentum_buffer"].clone(),
                              model.weight.clone())
    for i in range(2, 4):
        step(X, LABEL, i, 0.0)
    step.set_lr(5, 0.0)
    assert len(freezes) == 1 and freezes[0] is optimizer.param_groups[1]
    assert half_bias_grads[2:] == [None, None] and not master.half.bias.requires_grad
    assert model.bias.grad is None and master.trained_master == [model.weight]
    assert torch.equal(model.bias, bias) and torch.equal(optimizer.state[model.bias]["momentum_buffer"], momentum)
    assert not torch.equal(model.weight, weight)
    assert torch.equal(master.half.weight, model.weight.to(torch.bfloat16))


def test_under_half_lookahead_moves_a_frozen_weight_and_its_half_copy_follows():
    """Lookahead (every 4, d = 0.5) pulls the frozen bias half way back to its initial (slow) value at
    step 4; the step after it copies every master weight into the half copy, frozen ones included."""
    model, master, optimizer, step = half_step(lookahead_every=4)
    initial = model.bias.detach().clone()
    for i in range(2):
        step(X, LABEL, i, 0.0)
    trained = model.bias.detach().clone()
    for i in range(2, 4):
        step(X, LABEL, i, 0.0)
    assert torch.allclose(model.bias, (initial + trained) / 2) and not torch.equal(model.bias, trained)
    assert torch.equal(master.half.bias, model.bias.to(torch.bfloat16))
    assert torch.equal(master.half.weight, model.weight.to(torch.bfloat16))


def test_a_half_gradient_left_none_leaves_the_master_gradient_none_and_the_next_full_one_binds_again():
    """Review 4's None filter (stochastic depth drops a branch: its parameters get no gradient): the
    dropped layer's master gradient is None (the optimizer skips it), the other's is the half gradient
    in fp32; a later backward through both gives both theirs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    master = MasterWeights(model, torch.bfloat16)
    master.half[0](X.to(torch.bfloat16)).sum().backward()  # the second layer dropped
    expected = master.half[0].weight.grad.float()
    master.grads_to_master()
    assert model[1].weight.grad is None and model[1].bias.grad is None
    assert torch.equal(model[0].weight.grad, expected)
    master.zero_grad()
    master.half(X).sum().backward()
    expected = [h.grad.float() for h in master.copies]
    master.grads_to_master()
    assert all(torch.equal(m.grad, g) for m, g in zip(model.parameters(), expected))


def test_compile_warm_up_runs_each_graph_3_times_only_on_cuda_under_a_cuda_graph_mode():
    """Review 15b: CUDA graph trees record on a graph's second run, so 3 runs only where they exist."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [compile_warm_up_runs(mode, cuda) for mode in ("reduce-overhead", "max-autotune")] == [3, 3]
    assert [compile_warm_up_runs(mode, cuda) for mode in ("default", "max-autotune-no-cudagraphs")] == [1, 1]
    assert [compile_warm_up_runs(mode, cpu) for mode in ("reduce-overhead", "max-autotune", "default")] == [1, 1, 1]


def test_a_half_run_with_lookahead_evaluates_the_slow_weights_it_saves(tmp_path, fake_cifar_root, compose_with):
    """Review 15a: the master→half copy happens at Lookahead's end (finish), not at every evaluation.
    Lookahead every 3 of 2 steps never syncs, so its end puts the initial (slow) weights back: the
    final evaluation must be of those, as load_trained evaluates the saved checkpoint."""
    from cifarbench.data.loader import DeviceLoader
    from cifarbench.data import load_cifar10
    from cifarbench.engine.evaluate import evaluate

    summary = train(compose_with(*HALF, "trainer.epochs=1", "trainer.lookahead.every=3",
                                 f"data.root={fake_cifar_root}"), tmp_path)
    trained = load_trained(tmp_path / "checkpoints" / "last.pt")
    data = load_cifar10(fake_cifar_root, download=False)
    loader = DeviceLoader(torch.from_numpy(data.test_images[:20]), torch.from_numpy(data.test_labels[:20]), 20,
                          trained.preprocess, shuffle=False)
    loss, acc, _ = evaluate(trained.model, loader)
    assert summary["steps"] == 2 and (acc, loss) == (summary["final_test_acc"], summary["final_test_loss"])
