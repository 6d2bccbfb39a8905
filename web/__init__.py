"""The web client (plain HTML/JS/CSS), shipped inside the package as `robotcam.web`.

A regular package, not a namespace one: setuptools' editable finder maps `robotcam.web` to this
folder only when it has an __init__.py.
"""
