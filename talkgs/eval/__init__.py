"""`talkgs eval`: render a trained run against ground truth and score it (images, lip sync)."""
