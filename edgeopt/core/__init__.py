"""The records every layer speaks, and the gates every file passes: errors, the InputSpec, the artifact
folder and its manifest, bundles, what a model file is (``formats``, ``onnx_external``), quantization
settings, registries by convention, the trust gate (``trust``) and the search's deadline. Nothing here
imports the rest of edgeopt."""
