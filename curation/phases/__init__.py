"""The job's phases after scoring, as Ray schedules them (the runner drives them in order)."""
