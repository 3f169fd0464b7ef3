"""trainer.precision=half: a bf16 network (fp32 norm layers) beside fp32 master weights, on the CPU (bf16
convolutions run there; fp16 needs CUDA for its GradScaler)."""
import torch
import torch.nn.functional as F
from torch import nn

from cifarbench.commands.predict import load_trained
from cifarbench.engine.loop import train
from cifarbench.engine.precision import MasterWeights
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

