"""The agent: a forwarder on every host that spools to disk while its servers are away.

Local programs send carbon plaintext (TCP, UDP) and pickle to the agent on
127.0.0.1; the agent decodes them with the receiver's own parsers, numbers
the points in batches, spools every batch, and sends it to its server over
the acknowledged protocol (``protocol.ack_frames``) until acknowledged.

* ``settings``: the ``[agent]`` section of the configuration file, ``Destination``;
* ``hashing``: carbon-relay's consistent hashing (carbon_ch), for several servers;
* ``spool``: one destination's on-disk spool of numbered batches (the format);
* ``forwarder``: the pipeline's writer: splits, numbers and spools batches (no Twisted);
* ``counters``, ``selfmetrics``: what the agent did, as ``carbon.agents.<id>.*`` points;
* ``senders``: the Twisted clients that send the spools (acknowledged, or plaintext);
* ``service``: the wiring of one agent process.

Only ``senders`` and ``service`` import Twisted.
"""
