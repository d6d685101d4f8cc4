"""Everything about checkpoint files, and the only code that opens one.

manifest (what a complete checkpoint is), discover (which one `--ckpt_path auto` resumes), save (atomic
saves with their manifest), load (the one safe loader and `.metadata` unpickler), sharded (DCP folders,
read only through it), export (one consolidated file).
"""
