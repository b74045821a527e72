"""Product metrics to draw beside deploys: a Prometheus range query (:mod:`.prometheus`) or a CSV file (:mod:`.csvseries`)."""
