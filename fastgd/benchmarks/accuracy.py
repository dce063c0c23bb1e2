"""Time to accuracy: training seconds for each backend x batch size to reach a validation accuracy."""

from threadpoolctl import threadpool_limits

import fastgd
from fastgd.datasets import textbook
from .progress import Progress, compiling

BATCH_SIZES = (1, 8, 32, 128, None)


def time_to_accuracy(backends, target=0.94, max_epochs=200, max_seconds=20.0, threads=1, progress=True):
    """Per backend x batch size, on the textbook data with its network and SGD(0.05): the
    training seconds (evaluation excluded) until validation accuracy reaches ``target``
    (None when it has not after ``max_epochs`` epochs or ``max_seconds`` of training), and
    after each epoch ``(seconds so far, validation loss, validation accuracy)``."""
    X, X_val, y, y_val = textbook()
    results = []
    with Progress(len(backends) * len(BATCH_SIZES), "time to accuracy", "run", progress) as shown:
        for backend in backends:
            shown.stage(f"{backend}: warming up", slow=compiling("float64") if backend == "numba" else None)
            fastgd.MLP([10, 64, 32, 3], backend=backend).fit(X, y, epochs=1, batch_size=1)  # compile first
            for batch_size in BATCH_SIZES:
                net = fastgd.MLP([10, 64, 32, 3], backend=backend, random_state=42)
                optimizer, seconds, curve, reached = fastgd.SGD(lr=0.05), 0.0, [], None
                with threadpool_limits(threads):
                    for epoch in range(max_epochs):
                        shown.stage(f"{backend} batch {batch_size or 'full'}: epoch {epoch + 1}", refresh=epoch == 0)
                        history = net.fit(X, y, epochs=1, batch_size=batch_size, train_metrics=False,
                                          optimizer=optimizer if epoch == 0 else None)
                        seconds += history.history["epoch_time"][0]
                        loss, accuracy = net.evaluate(X_val, y_val)
                        curve.append((seconds, loss, accuracy))
                        if accuracy >= target:
                            reached = seconds
                            break
                        if seconds > max_seconds:
                            break
                results.append({"backend": backend, "batch_size": batch_size or "full", "target": target,
                                "seconds": reached, "epochs": len(curve), "curve": curve})
                shown.advance()
    return results


def table(results):
    sizes = list(dict.fromkeys(r["batch_size"] for r in results))
    lines = ["| backend | " + " | ".join(f"batch {s}" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for backend in dict.fromkeys(r["backend"] for r in results):
        cells = []
        for r in (r for r in results if r["backend"] == backend):
            cells.append(f"{r['seconds']:.3f} s ({r['epochs']} ep.)" if r["seconds"] is not None
                         else f"not reached ({r['epochs']} ep.)")
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

