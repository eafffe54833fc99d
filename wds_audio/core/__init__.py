"""What every room uses, and nothing of theirs: seeded randomness that resumes exactly (rng.py),
the thread budget of a process and its workers (threads.py), handing freed memory back to
the system (heap.py), and keeping the pages forked workers share with their parent shared
(forking.py). Enters and leaves: plain values; it imports no other room.
"""
