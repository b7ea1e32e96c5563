"""Why did a model decide that: modality attribution, cross-attention maps, Grad-CAM, robustness.

Every function here takes a trained model (an nn.Module from the registry or a loaded checkpoint) and
a split's dataset, and returns plain data; the runner stores it in the result record and the report
renders it. Modules: `inference` (test passes with per-head outputs and modified inputs),
`attribution` (withheld modalities, heads alone, head disagreement), `attention_maps`
(cross-attention probabilities and Grad-CAM), `robustness` (imaging shifts), `gallery` (per-case
figures and `ssnbench explain`).
"""

#: What "withholding a modality" feeds the model instead of the image. Zeros after normalisation are
#: a flat image of the normalisation mean colour (per channel): the input that carries no spatial
#: information and sits at the centre of what the network saw in training (docs/explain.md).
NEUTRAL_INPUT = "a flat image of the normalisation mean colour (zeros after normalisation)"
