"""The streaming role: the Faust worker (clicks → streaming features) and the click producer."""
