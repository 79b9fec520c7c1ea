"""Floor 3: the data plane. The Starlette edge app, one normalised path, behavior routing, the Lambda@Edge pipeline, its rules, the cache, viewer responses for failures."""

__all__ = ['app', 'cache', 'paths', 'pipeline', 'responses', 'routing', 'rules']
