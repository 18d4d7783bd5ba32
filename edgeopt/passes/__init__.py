"""PyTorch-level passes, one technique per file. Passes return modules and write no files,
except the training loop's own checkpoints under the folder it is given."""
