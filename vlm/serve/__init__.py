"""``psgvlm serve``: review a night in the browser.

The page shows the night (hypnogram, hypnodensity, reference and disagreements, sleep
statistics) over the epoch in view (traces at clinical scales, neighbouring epochs, the
model's image), with a chat about the epoch, the explanation map on demand, and stage
corrections saved as they are made and exported as CSV and EDF+.

Modules: :mod:`~vlm.serve.night` (one recording: opened, staged in steps, corrected),
:mod:`~vlm.serve.edits` (the edit log), :mod:`~vlm.serve.library` (the recordings, the
model and the background work), :mod:`~vlm.serve.views` (what the API returns),
:mod:`~vlm.serve.api` (the routes) and :mod:`~vlm.serve.app` (the application and its
server). The command is :mod:`vlm.commands.serve`; docs/serve.md describes the page and
the API.
"""
