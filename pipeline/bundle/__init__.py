"""The bundle format: the manifest's typed model and the rule for paths inside a bundle."""
