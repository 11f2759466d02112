"""Data: archives, competition layouts, download and prepare, fold batches, augmentation."""
