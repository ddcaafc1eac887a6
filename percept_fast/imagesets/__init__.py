"""Folders of images from the command line: ``percept-fast dist | dirs | pairs`` (see :mod:`.jobs`)."""
