"""Queue chunks embedded by another model than the configured one (after a model change)."""

from datetime import timedelta

from jobs.schedule import Job


def _model() -> tuple | None:
    from pyapp.knowledge.ingest import embedding_model_name

    model = embedding_model_name()
    return (model,) if model else None


JOB = Job(every=timedelta(hours=1), per_tenant=True, sql="SELECT parley.enqueue_stale_embeddings($1)", args=_model)
