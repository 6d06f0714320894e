// Optional help on top of plain forms: a reject asks for confirmation when no reason is given,
// and "select all" ticks every update of a project. Everything works without it.
document.addEventListener("submit", function (event) {
  var button = event.submitter;
  if (!button) return;
  var reason;
  if (button.value === "reject") {
    reason = event.target.querySelector("input[name=reason]");
  } else if (button.value.indexOf("reject:") === 0) {
    // One row's own Reject: the reason typed beside it.
    reason = event.target.querySelector("input[name='reason-" + button.value.slice(7) + "']");
  } else {
    return;
  }
  if (reason && reason.value.trim() === "") {
    if (!window.confirm("Reject without a reason? The person will not learn why.")) {
      event.preventDefault();
    }
  }
});
