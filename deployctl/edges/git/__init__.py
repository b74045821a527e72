"""The git edge: reading deploy repos at a ref (pygit2) and mirroring remote repos."""
