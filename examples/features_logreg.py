"""A trained CNN as a feature extractor: train digits-cnn for a few epochs, freeze it, take the 64
activations of its hidden layer relu3 for every digit, and fit scikit-learn's LogisticRegression on
them (the lecture's "pre-trained CNN + a linear classifier on its features").

Run: .venv/bin/python examples/features_logreg.py [--epochs 3] [--weights CKPT]
(--weights: a digits-cnn checkpoint to use instead of training one; training writes runs/digits_cnn*)
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

import netc
from netc.runtime.predict import Predictor

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=3, help="epochs to train digits-cnn (default 3)")
parser.add_argument("--weights", type=Path, help="a digits-cnn checkpoint: skip training")
args = parser.parse_args()

# 1. The network: trained here (as `netc train` does), or a checkpoint of it.
net = netc.load(Path(__file__).resolve().parent.parent / "specs" / "digits-cnn.yaml")
weights = args.weights
if weights is None:
    result = net.train(runs_root="runs", epochs=args.epochs)
    weights = result.run_dir / "last.safetensors"

# 2. Its features: relu3's activations (evaluation mode: dropout off) of the spec's train and test
#    digits, which net.data() gives normalized as training saw them.
train, test = net.data("train"), net.data("eval")
predictor = Predictor(net.loaded, weights)
features = {name: predictor.features(split["image"], "relu3", normalized=True).values
            for name, split in (("train", train), ("test", test))}

# 3. A linear classifier on the frozen features, and the network's own head for comparison.
classifier = LogisticRegression(max_iter=2000).fit(features["train"], train["label"])
accuracy = classifier.score(features["test"], test["label"])
own = np.mean(predictor.predict(test["image"], normalized=True).scores.argmax(axis=1) == test["label"])
print(f"relu3 features: {features['train'].shape[1]} per digit, {len(features['train'])} train digits")
print(f"logistic regression on them: test accuracy {accuracy:.4f} ({len(test['label'])} digits)")
print(f"the network's own classifier (fc2): test accuracy {own:.4f}")
