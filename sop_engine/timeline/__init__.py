"""The referral timeline: an append-only, hash-chained record of what happened."""
