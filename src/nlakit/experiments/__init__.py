"""Research experiments: one subpackage each (`symreg`, `transfer`, `cost`), plus `common` for what they share.

Experiments are library code: they take a progress callback and return results; the CLI verbs in
`nlakit.commands` render them. No experiment imports another one or `nlakit.commands`.
"""
