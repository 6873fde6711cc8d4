"""A user's negative control: the model told the default area sits 64 MiB lower than the kernel puts it.

Run by tests/plugin/test_plugin.py with --cma-board boards/qemu-aquila.yaml;
this test must fail, and its failure must be the model's explanation.
"""


def test_a_wrong_model_base_fails_with_the_models_explanation(cma_target, cma_assert):
    cma_assert(cma_target.capture(pins={"linux,cma": 0x60000000}))
