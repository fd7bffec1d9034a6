// The release phase: runs once per release before new dynos start. Exit non-zero to refuse it.
console.log("release phase: preparing release");
if (process.env.FAIL_RELEASE) {
  console.log("release phase: FAIL_RELEASE is set, refusing this release");
  process.exit(1);
}
console.log("release phase: done");
