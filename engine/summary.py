"""A finished run's summary.json: what it trained, its final and best figures, its speed and provenance.

    {"run", "seed", "dataset", "target", "head", "method", "sources", "epochs", "metric", "lr_schedule",
     "final": {test metrics of the last epoch}, "best": {metric, epoch, chosen_on},
     "images_per_s", "train_seconds", "wall_seconds", "parameters", "processes", "device", "precision",
     "networks" and "mean_of_networks" (methods deploying several), "provenance"}
"""
from __future__ import annotations

from models.network import count_parameters


def make_summary(cfg, history: list[dict], state: dict, params: dict, accelerator, main_metric: str,
                 networks: dict, reported_note: str = "", dataset: str | None = None) -> dict:
    """`dataset`: the data set's own name where the reader knows it (a frame store of your own videos read
    through `data.dataset: frames` is named by its store), else data.dataset."""
    last = history[-1] if history else {}
    images = sum(r.get("train/images", 0) for r in history)
    summary = {
        "run": cfg.run.name, "seed": cfg.seed, "dataset": dataset or cfg.data.dataset, "target": cfg.model.target,
        "head": cfg.model.head if params.get("training_heads") else None,  # none trained: scratch, KD, DML
        "method": cfg.method.name, "sources": [s.name for s in cfg.sources],
        "epochs": state["epoch"], "metric": main_metric, "lr_schedule": lr_schedule(cfg.optim),
        "final": {k: v for k, v in last.items() if k.startswith("test/")},
        "best": {main_metric: state["best"], "epoch": state["best_epoch"]},
        "images_per_s": images / state["train_seconds"] if state["train_seconds"] else None,
        "train_seconds": state["train_seconds"],
        "wall_seconds": sum(r.get("epoch_seconds", 0) for r in history),
        "parameters": params,
        "processes": accelerator.num_processes, "device": accelerator.device.type,
        "precision": accelerator.mixed_precision,
    }
    if len(networks) > 1:
        metric = main_metric.removeprefix("test/")
        first = next(iter(networks))
        summary["networks"] = {
            name: {"arch": d.arch, "final": last.get(f"test/{name}/{metric}"),
                   "best": {main_metric: state["best_of"][name][0], "epoch": state["best_of"][name][1]}}
            for name, d in networks.items()}
        summary["mean_of_networks"] = {main_metric: last.get(f"test/mean/{metric}")}
        summary["reported"] = (f"final and best are {first} ({networks[first].arch}); networks lists each, "
                               f"mean_of_networks their mean. {reported_note}").strip()
    return summary


def lr_schedule(optim) -> str:
    """The schedule in words, naming the record key a plateau schedule reads."""
    if optim.schedule == "plateau":
        return f"plateau on {optim.plateau_metric} (x{optim.plateau_factor}, patience {optim.plateau_patience})"
    return optim.schedule


def best_summary(history: list[dict], state: dict, main_metric: str, chosen_on: str) -> dict:
    """The best epoch, the split metric that chose it, and the test metric at that epoch."""
    best = {main_metric: state["best"], "epoch": state["best_epoch"], "chosen_on": chosen_on}
    if chosen_on != main_metric:
        at_best = next((r for r in history if r["epoch"] == state["best_epoch"]), {})
        best.update({chosen_on: state["best"], main_metric: at_best.get(main_metric)})
    return best


def parameter_counts(method) -> dict[str, int]:
    """Parameters of the first deployed target, and of everything trained that is not deployed."""
    unwrap = method.accelerator.unwrap_model if method.accelerator is not None else (lambda net: net)  # DDP
    deployed = [count_parameters(unwrap(d.network).target) for d in method.deployed().values()]
    trained = sum(count_parameters(net) for net in method.nets.values())
    return {"deployed_target": deployed[0], "training_heads": trained - sum(deployed), "trained": trained}


def primary_metric_line(summary: dict) -> str:
    metric = summary["metric"]
    return (f"final {metric} {summary['final'].get(metric, float('nan')):.2f}, best {summary['best'][metric]:.2f} "
            f"(epoch {summary['best']['epoch']}), {summary['epochs']} epochs")
