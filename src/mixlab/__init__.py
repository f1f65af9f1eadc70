"""mixlab: mixed-sample data augmentation for PyTorch."""
