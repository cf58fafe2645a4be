"""netc from Python, as in the lecture's notebook: the 3-4-3-2 sigmoid network by hand.

Run: .venv/bin/python examples/notebook_api.py
"""

import numpy as np

import netc

# 1. Load and inspect: validation and shapes, nothing compiled yet.
net = netc.load("specs/seed-mlp.yaml")
summary = net.summary()
print(f"{net.spec.name}: {summary.total_params} parameters")  # 39, as the lecture counts

# 2. Compile the fused plan (float64 here, for exact checks) and look at the weights.
model = net.compile(dtype="float64", batch=8, seed=0)
weights = model.get_weights()  # named like a PyTorch state_dict
print({name: value.shape for name, value in weights.items()})

# 3. Forward, loss and gradients on numpy arrays.
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 3))
label = rng.integers(0, 2, 8)
log_probs = model.predict({"x": x, "label": label})
loss, grads = model.loss_and_gradients({"x": x, "label": label})
print(f"loss {loss:.4f}; exp(log_softmax) sums to {np.exp(log_probs).sum(axis=1)[0]:.6f}")

# 4. The lecture's update rule by hand: w <- w - lr * dL/dw, then the loss drops.
lr = 0.5
model.set_weights({name: weights[name] - lr * grads[name] for name in grads})
new_loss, _ = model.loss_and_gradients({"x": x, "label": label})
print(f"after one step of gradient descent: {new_loss:.4f} (was {loss:.4f})")

# 5. Or train on the spec's own data, exactly as `netc train` does.
result = net.train(runs_root="runs", epochs=3)
print(f"trained {len(result.epochs)} epochs; eval accuracy {result.epochs[-1].eval_accuracy:.3f}; "
      f"checkpoint in {result.run_dir}")
