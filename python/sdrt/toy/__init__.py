"""The toy world: a synthetic world of coloured shapes (data), a deterministic reader of images
(scorer), the trainer of the toy model family (train) and its shipped weights (weights/)."""
