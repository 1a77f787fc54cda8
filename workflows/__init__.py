"""The Argo side of meli-sweep, run from a workstation: the sweep as an Argo DAG (dag.py), its command line
(cli.py: render, submit, results) and a local Prometheus for watching a sweep (observe.py)."""
