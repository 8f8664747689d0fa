"""The one root of every error hwprune raises for a user's input or situation."""


class HwpruneError(ValueError):
    """Every hwprune error derives from this: ``except hwprune.HwpruneError`` catches them all.

    It is a ``ValueError``, as each of hwprune's errors was before they shared a root.
    """
