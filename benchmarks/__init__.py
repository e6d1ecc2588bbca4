"""Speed: the step suite, the input pipeline, convolutions, top-k, a PyTorch peer; each writes JSON."""
