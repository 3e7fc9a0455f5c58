"""evonas trains and searches where evosax, tensorflow-datasets, tensorboardX, matplotlib and scikit-learn are
missing: an accelerator image runs it from the source tree and cannot install them (experiments/gpu_run.sh)."""

import subprocess
import sys
import textwrap

GUARD = textwrap.dedent("""
    import builtins
    real_import = builtins.__import__
    MISSING = ("evosax", "tensorflow_datasets", "tensorboardX", "matplotlib", "sklearn")

    def without_extras(name, *args, **kwargs):
        if name.split(".")[0] in MISSING:
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return real_import(name, *args, **kwargs)

    builtins.__import__ = without_extras
""")


def run_without_extras(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", GUARD + textwrap.dedent(code)], capture_output=True, text=True, check=False,
                          timeout=300)


def test_search_modules_and_the_monitor_work_without_the_optional_packages(tmp_path):
    result = run_without_extras(f"""
        import evonas.cli, evonas.population, evonas.search
        from evonas.monitor import GenerationMonitor
        from evonas.search import SearchConfig
        from evonas.strategies import STRATEGIES

        assert list(STRATEGIES) == ["evolution", "random", "ga", "cma_es"]
        SearchConfig(strategy="ga")  # the name is known; only building it needs evosax
        monitor = GenerationMonitor({str(tmp_path)!r}, population_size=2, steps=5, num_generations=1,
                                    done_generations=0)
        history = [{{"id": i, "generation": 0, "genome": [i, 0], "fitness": 0.5, "val_accuracy": 0.5,
                    "diverged": False}} for i in range(2)]
        monitor.record(0, history, wall_seconds=1.0, compilations=2)
        monitor.close()
        try:
            STRATEGIES["ga"]
        except ImportError as error:
            print("ga:", error)
    """)
    assert result.returncode == 0, result.stderr
    assert "ga: No module named 'evosax" in result.stdout
    assert "tensorboardX is not installed" in result.stderr
    assert (tmp_path / "generations.jsonl").read_text().count("\n") == 1
