"""`python -m pipelines.llama [install|build|quantize]`: make sure a llama-server runs here; `quantize` compiles
llama-quantize for `pipelines.train export --quant q4_k_m` (`pipelines.teacher.llama`)."""

from __future__ import annotations

import sys

from pipelines.cli import main_guard
from pipelines.teacher import llama, server


def main(argv: list[str]) -> int:
    def run(args: list[str]) -> int:
        if args[:1] == ["install"]:
            print(server.install_llama())
        elif args[:1] == ["build"]:
            print(llama.build())
        elif args[:1] == ["quantize"]:
            print(llama.build_quantize())
        elif not args:
            found = llama.candidates(fetch=False)
            print(found[0] if found else f"no llama-server here: {llama.prebuilt_problem() or 'not fetched yet'}; "
                                         "run python -m pipelines.llama install")
        else:
            print("usage: python -m pipelines.llama [install|build|quantize]", file=sys.stderr)
            return 2
        return 0

    return main_guard(run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
