"""Whisper history in and out of the store, and the whisper tools' equivalents.

An adapter: the only package that imports the ``whisper`` module (in
``wsp_file``); the core never imports this package.

* ``wsp_file``: .wsp headers and rings read into arrays, written from arrays;
* ``estimate``: whisper's one value per bucket turned into sub-counters;
* ``cells``: sub-counter cells of one archive, regrouped between steps;
* ``rebuild``: cells moved from one set of archives to another;
* ``importer``: a whisper tree imported into a store (worker processes, journal);
* ``sources``: storage directories, whisper trees and .wsp files as history sources;
* ``tools``: resize, merge, fill, diff and export;
* ``paths``: metric names and whisper paths, safely; ``progress``: the progress bar.
"""
