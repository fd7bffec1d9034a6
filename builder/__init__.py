"""The builder pool: JetStream build jobs, buildpacks in runc, slugs in the object store."""
