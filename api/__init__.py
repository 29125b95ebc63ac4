"""The App API: staff and portal reads and writes of jobs and leads, and their change stream."""
