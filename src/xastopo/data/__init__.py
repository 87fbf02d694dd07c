"""Raw data: readers, validation, labels, assembly into materials, and the split."""
