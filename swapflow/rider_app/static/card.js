// Saving a card: Stripe.js confirms the page's SetupIntent with the card typed into Stripe's own field;
// then the form tells the server, which asks Stripe whether it succeeded before recording the card.
(function () {
  const form = document.getElementById("card-form");
  const stripe = Stripe(form.dataset.publishableKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");
  const problem = document.getElementById("card-error");
  let confirmed = false;
  form.addEventListener("submit", async (event) => {
    if (confirmed) return;
    event.preventDefault();
    problem.hidden = true;
    const { error } = await stripe.confirmCardSetup(form.dataset.clientSecret, { payment_method: { card } });
    if (error) {
      problem.textContent = error.message || "The card was not saved.";
      problem.hidden = false;
      return;
    }
    confirmed = true;
    form.submit();
  });
})();
