"""The control room's screens: the main layout, dialogs, the inspector and help."""
