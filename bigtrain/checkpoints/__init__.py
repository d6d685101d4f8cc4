"""Everything about checkpoint files, and the only code that opens one.

manifest (what a complete checkpoint is), discover (which one `--ckpt_path auto` resumes), save (atomic
saves with their manifest), unpickle (the one unpickler and its allow-list), load (the one safe loader, a
file or a folder), sharded (DCP folders, read only through the unpickler), export (one consolidated file).
"""
